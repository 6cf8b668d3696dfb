"""EcoLoRA against FedIT on one task over several seeds: accuracy, bytes, rounds to reach.

    python benchmarks/ecolora_vs_fedit.py --seeds 0 1 2 [--set key=value ...] [--workers 2]
        [--out DIR]
    python benchmarks/ecolora_vs_fedit.py --seeds 0 1 2 --from-compare runs/compare --out DIR

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
from ecolora.report.results import write_json
from ecolora.runtime.batch import job_for, run_jobs_parallel


def job(method: str, seed: int, sets: list[str], eco_sets: list[str]):
    over = parse_set(sets + (eco_sets if method == "ecolora" else []))
    over.setdefault("fed", {})["eval_every"] = 1
    return job_for(method, merge(RunConfig(), over), seed)


def read_rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if any("eval_accuracy" not in r for r in rows):
        sys.exit(f"error: {path} was not evaluated every round (use --set fed.eval_every=1)")
    return rows


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
    ap.add_argument("--workers", type=int, default=1, help="processes (one run each)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--from-compare", type=Path, metavar="DIR",
                    help="no new runs: read DIR/runs/{fedit,ecolora}-seedS/metrics.jsonl of an "
                    "`ecolora compare` run made with --set fed.eval_every=1")
    args = ap.parse_args()
    if args.from_compare:
        rows = [read_rows(args.from_compare / "runs" / f"{m}-seed{s}" / "metrics.jsonl")
                for s in args.seeds for m in ("fedit", "ecolora")]
    else:
        jobs = [job(m, s, args.sets, args.eco_sets)
                for s in args.seeds for m in ("fedit", "ecolora")]
        rows = [rec.rows for rec in run_jobs_parallel(jobs, args.workers)]
    table = []
    for i, seed in enumerate(args.seeds):
        fed, eco = rows[2 * i], rows[2 * i + 1]
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
        write_json(args.out / "ecolora_vs_fedit.json", table)
    sys.exit(0)


if __name__ == "__main__":
    main()
