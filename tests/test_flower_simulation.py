"""``flwr run apps/flower`` on Flower's Simulation Engine (Ray), from a fresh ``FLWR_HOME``.

What a new user types: no SuperLink of our own, Flower starts its managed local SuperLink in
simulation mode. The run must complete and write the same ``metrics.jsonl`` (timing aside) as
the in-process simulator, for fedit, ecolora and fedsa-lora (whose B tensors stay on the
nodes). The managed SuperLink is detached from ``flwr``; it is found by its private database
path under our ``FLWR_HOME`` and stopped by PID with everything it started.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr (Flower) is not installed")
pytest.importorskip("ray", reason="ray (flwr[simulation]) is not installed")

from ecolora.runtime.flower.local import executable, toml_value  # noqa: E402
from ecolora.runtime.flower.sim_engine import run_on_simulation_engine  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "apps" / "flower"
TIMING = {"compute_s", "wall_s"}


@pytest.mark.parametrize("method", ["ecolora", "fedit", "fedsa-lora"])
def test_flwr_run_on_the_simulation_engine(method, tiny_model_dir, alpaca_file, tmp_path):
    from ecolora.runtime.flower.launch_check import check_run_config
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import simulate

    try:
        executable("flwr")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    home, out = tmp_path / "flwr-home", tmp_path / "out"
    job = {"method": method, "model.name": str(tiny_model_dir),
           "data.dataset": str(alpaca_file), "flower.out": str(out), "fed.clients": 4,
           "fed.rounds": 2, "fed.local_steps": 1, "fed.eval_every": 1,
           "data.train_examples": 40, "data.eval_examples": 8, "model.threads": 1,
           "flower.join-timeout": 120.0}
    overrides = " ".join(f"{k}={toml_value(v)}" for k, v in job.items())
    # no --federation-config: Flower's default 2 SuperNodes play the 4 clients
    outcome, survivors = run_on_simulation_engine(APP, overrides, home, timeout=420)
    assert outcome.status == "finished:completed", (outcome.status, outcome.details)
    assert not survivors

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    _, cfg, _ = check_run_config(APP, overrides)
    sim = json.loads(json.dumps(simulate(build(cfg))["rounds"]))
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in sim]
    assert json.loads((out / "summary.json").read_text())["runtime"] == "flower"
