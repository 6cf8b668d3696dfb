"""EcoLoRA against FedIT on one task over several seeds: accuracy, bytes, rounds to reach.

    python benchmarks/ecolora_vs_fedit.py --seeds 0 1 2 [--set key=value ...] [--out DIR]

For each seed both methods run with the same data, partition and LoRA init. Reported per seed:
FedIT's final exact match F; the first eval round at which each method reaches F - 1 point; the
bytes EcoLoRA had uploaded by then as a ratio of FedIT's total upload; both accuracies at equal
rounds. Ratios come from one run, so machine noise does not enter them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecolora.config import RunConfig, merge, parse_set
from ecolora.runtime.setup import build
from ecolora.runtime.sim import simulate


def run(method: str, seed: int, sets: list[str], eco_sets: list[str]) -> list[dict]:
    over = parse_set(sets + (eco_sets if method == "ecolora" else []))
    over.setdefault("fed", {})["seed"] = seed
    over["fed"]["eval_every"] = 1
    cfg = merge(RunConfig(), {"method": method, **over})
    return simulate(build(cfg))["rounds"]


def reach(rows: list[dict], target: float) -> tuple[int | None, int]:
    """First round whose accuracy >= target, and the bytes uploaded up to and including it."""
    sent = 0
    for r in rows:
        sent += r["upload_bytes"]
        if r.get("eval_accuracy", -1) >= target:
            return r["round"], sent
    return None, sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--eco-set", dest="eco_sets", action="append", default=[],
                    help="overrides for the ecolora runs only")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    table = []
    for seed in args.seeds:
        fed = run("fedit", seed, args.sets, [])
        eco = run("ecolora", seed, args.sets, args.eco_sets)
        final_f = fed[-1]["eval_accuracy"]
        final_e = eco[-1]["eval_accuracy"]
        target = final_f - 0.01
        r_f, _ = reach(fed, target)
        r_e, bytes_e = reach(eco, target)
        total_f = sum(r["upload_bytes"] for r in fed)
        rounds = min(len(fed), len(eco))
        row = {
            "seed": seed, "fedit_final": final_f, "ecolora_final": final_e,
            "fedit_rounds_to_reach": r_f, "ecolora_rounds_to_reach": r_e,
            "ecolora_bytes_to_reach_over_fedit_total": bytes_e / total_f if r_e else None,
            "upload_ratio_per_round": sum(r["upload_bytes"] for r in eco[:rounds])
            / sum(r["upload_bytes"] for r in fed[:rounds]),
            "equal_round": rounds, "fedit_at_equal": fed[rounds - 1]["eval_accuracy"],
            "ecolora_at_equal": eco[rounds - 1]["eval_accuracy"],
            "fedit_total_upload": total_f,
            "ecolora_curve": [r["eval_accuracy"] for r in eco],
            "fedit_curve": [r["eval_accuracy"] for r in fed],
        }
        table.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("curve")}), flush=True)
    print("\n| seed | FedIT final | EcoLoRA final | rounds to reach (FedIT / EcoLoRA) "
          "| EcoLoRA bytes to reach / FedIT total | upload per round ratio |")
    print("|---|---|---|---|---|---|")
    for r in table:
        ratio = r["ecolora_bytes_to_reach_over_fedit_total"]
        print(f"| {r['seed']} | {100 * r['fedit_final']:.1f}% | {100 * r['ecolora_final']:.1f}% "
              f"| {r['fedit_rounds_to_reach']} / {r['ecolora_rounds_to_reach']} "
              f"| {'not reached' if ratio is None else f'{100 * ratio:.1f}%'} "
              f"| {100 * r['upload_ratio_per_round']:.1f}% |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ecolora_vs_fedit.json").write_text(json.dumps(table, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
