"""Seconds per round of Flower (Deployment Engine on loopback, Simulation Engine) against the
in-process runtime, for the same tiny 10-round job (issue 14's overhead table).

    nice -n 19 python benchmarks/flower_overhead.py --model DIR --dataset FILE [--rounds 10]

Every runtime writes a run folder whose rows carry the same numbers (the driver is shared);
only time differs. The in-process figure is the simulator's wall time per round; the Flower
figures are the mean of the ServerApp's ``wall_s`` per row (plan, messages out, ClientApp start
and training on the nodes, replies, server step, evaluation) and the end-to-end time from
``flwr run`` to ``finished``, divided by the rounds. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "apps" / "flower"


def job(model: str, dataset: str, out: Path, rounds: int, clients: int) -> dict:
    return {"method": "ecolora", "model.name": model, "data.dataset": dataset,
            "flower.out": str(out), "fed.clients": clients, "fed.rounds": rounds,
            "fed.local_steps": 2, "fed.eval_every": 5, "data.train_examples": 60,
            "data.eval_examples": 16, "model.threads": 1, "flower.join-timeout": 120.0}


def per_round(out: Path) -> float:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return sum(r["wall_s"] for r in rows) / len(rows)


def in_process(overrides: dict, rounds: int) -> float:
    from ecolora.runtime.flower.launch_check import check_run_config
    from ecolora.runtime.flower.local import toml_value
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import simulate

    text = " ".join(f"{k}={toml_value(v)}" for k, v in overrides.items())
    _, cfg, _ = check_run_config(APP, text)
    setup = build(cfg)
    t0 = time.perf_counter()
    simulate(setup)
    return (time.perf_counter() - t0) / rounds


def deployment(overrides: dict, rounds: int, clients: int, root: Path) -> tuple[float, float]:
    from ecolora.runtime.flower.local import LocalDeployment

    with LocalDeployment(root, nodes=clients) as dep:
        outcome = dep.run(APP, overrides, timeout=1800,
                          done_file=Path(overrides["flower.out"]) / "summary.json")
    if outcome.status != "finished:completed":
        raise SystemExit(f"deployment run failed: {outcome}")
    return per_round(Path(overrides["flower.out"])), outcome.wall_s / rounds


def simulation(overrides: dict, rounds: int, clients: int, root: Path) -> tuple[float, float]:
    from ecolora.runtime.flower.local import toml_value
    from ecolora.runtime.flower.sim_engine import run_on_simulation_engine

    text = " ".join(f"{k}={toml_value(v)}" for k, v in overrides.items())
    root.mkdir(parents=True, exist_ok=True)
    outcome, _ = run_on_simulation_engine(APP, text, root / "flwr-home", timeout=1800,
                                          supernodes=clients)
    if outcome.status != "finished:completed":
        raise SystemExit(f"simulation run failed: {outcome}")
    return per_round(Path(overrides["flower.out"])), outcome.wall_s / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ecolora-overhead-") as tmp:
        root = Path(tmp)
        make = lambda name: job(args.model, args.dataset, root / name, args.rounds,  # noqa: E731
                                args.clients)
        base = in_process(make("sim"), args.rounds)
        dep_row, dep_e2e = deployment(make("dep"), args.rounds, args.clients, root / "d")
        sim_row, sim_e2e = simulation(make("ray"), args.rounds, args.clients, root / "r")
    print("| runtime | s/round (ServerApp rows) | s/round (end to end) | overhead s/round |")
    print("|---|---|---|---|")
    print(f"| in-process (`ecolora run`) | {base:.2f} | {base:.2f} | 0 |")
    for name, row, e2e in (("Deployment Engine, loopback", dep_row, dep_e2e),
                           ("Simulation Engine (Ray)", sim_row, sim_e2e)):
        print(f"| {name} | {row:.2f} | {e2e:.2f} | {row - base:+.2f} |")


if __name__ == "__main__":
    main()
