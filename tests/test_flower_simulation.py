"""``flwr run apps/flower`` on Flower's Simulation Engine (Ray), from a fresh ``FLWR_HOME``.

What a new user types: no SuperLink of our own, Flower starts its managed local SuperLink in
simulation mode. The run must complete and write the same ``metrics.jsonl`` (timing aside) as
the in-process simulator. The managed SuperLink is detached from ``flwr``; it is found by its
private database path under our ``FLWR_HOME`` and stopped by PID with everything it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr (Flower) is not installed")
pytest.importorskip("ray", reason="ray (flwr[simulation]) is not installed")

from ecolora.runtime.flower.local import (  # noqa: E402
    OFFLINE_ENV,
    descendants,
    executable,
    free_port,
    terminate,
    toml_value,
)

APP = Path(__file__).resolve().parents[1] / "apps" / "flower"
TIMING = {"compute_s", "wall_s"}


def managed_superlinks(home: Path) -> list[int]:
    """PIDs of processes whose command line names our FLWR_HOME (the managed SuperLink)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(home) in cmd and "superlink" in cmd:
            found.append(int(entry.name))
    return found


def test_flwr_run_on_the_simulation_engine(tiny_model_dir, alpaca_file, tmp_path):
    from ecolora.runtime.flower.launch_check import check_run_config
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import simulate

    try:
        flwr = executable("flwr")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    home, out = tmp_path / "flwr-home", tmp_path / "out"
    job = {"method": "ecolora", "model.name": str(tiny_model_dir),
           "data.dataset": str(alpaca_file), "flower.out": str(out), "fed.clients": 4,
           "fed.rounds": 2, "fed.local_steps": 1, "fed.eval_every": 1,
           "data.train_examples": 40, "data.eval_examples": 8, "model.threads": 1,
           "flower.join-timeout": 120.0}
    overrides = " ".join(f"{k}={toml_value(v)}" for k, v in job.items())
    env = {**os.environ, **OFFLINE_ENV, "FLWR_HOME": str(home),
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
           "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([flwr, *args], capture_output=True, text=True, env=env,
                              timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path)

    try:
        # no --federation-config: Flower's default 2 SuperNodes play the 4 clients
        res = cli("run", str(APP), "--format", "json", "-c", overrides)
        run_id = str(json.loads(res.stdout)["run-id"])
        status, deadline = "", time.monotonic() + 420
        while time.monotonic() < deadline and not status.startswith("finished"):
            time.sleep(2)
            listed = cli("ls", "--run-id", run_id, "--format", "json")
            try:
                status = json.loads(listed.stdout)["runs"][0]["status"]
            except (ValueError, KeyError, IndexError):
                status = ""
        log = (home / "local-superlink" / "superlink.log")
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        assert status == "finished:completed", (status, res.stdout, res.stderr, tail)
    finally:
        pids = []
        for pid in managed_superlinks(home):
            pids += [*descendants(pid), pid]
        survivors = terminate(list(dict.fromkeys(pids)))
    assert not survivors

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    _, cfg, _ = check_run_config(APP, overrides)
    sim = json.loads(json.dumps(simulate(build(cfg))["rounds"]))
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in sim]
    assert json.loads((out / "summary.json").read_text())["runtime"] == "flower"
