"""``flwr run APP`` on Flower's Simulation Engine from a private ``FLWR_HOME``, then a clean stop.

With ``address = ":local:"`` (a fresh ``FLWR_HOME``'s default connection) ``flwr run`` starts a
*detached* managed SuperLink in simulation mode that outlives the command. Tests and
``benchmarks/flower_overhead.py`` need the run's status, its wall time, and every process it
started gone afterwards; the SuperLink is found by the private ``FLWR_HOME`` in its command line
and stopped by PID with all its descendants (the Ray workers).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from ecolora.runtime.flower.local import (
    OFFLINE_ENV,
    RunOutcome,
    descendants,
    executable,
    free_port,
    terminate,
)


def managed_superlinks(home: Path) -> list[int]:
    """PIDs of processes whose command line names ``home`` (the managed SuperLink)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(home) in cmd and "superlink" in cmd:
            found.append(int(entry.name))
    return found


def run_on_simulation_engine(app: Path, overrides: str, home: Path, timeout: float = 600.0,
                             supernodes: int | None = None) -> tuple[RunOutcome, list[int]]:
    """Run ``app`` with run-config ``overrides`` (``k=v`` text); (outcome, surviving PIDs).

    ``supernodes`` None keeps Flower's default (2 SuperNodes). The outcome's ``details`` holds
    the tail of the run's log (``flwr log --show``) when it did not complete."""
    flwr = executable("flwr")
    env = {**os.environ, **OFFLINE_ENV, "FLWR_HOME": str(home),
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
           "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([flwr, *args], capture_output=True, text=True, env=env,
                              timeout=120, stdin=subprocess.DEVNULL, cwd=home.parent)

    extra = ["--federation-config", f"num-supernodes={supernodes}"] if supernodes else []
    run_id, status, t0 = "", "", time.monotonic()
    try:
        res = cli("run", str(app), "--format", "json", *extra, "-c", overrides)
        try:
            run_id = str(json.loads(res.stdout)["run-id"])
        except (ValueError, KeyError):
            status = f"not started: {(res.stderr or res.stdout).strip()[-500:]}"
        deadline = t0 + timeout
        while run_id and time.monotonic() < deadline and not status.startswith("finished"):
            time.sleep(1)
            listed = cli("ls", "--run-id", run_id, "--format", "json")
            try:
                status = json.loads(listed.stdout)["runs"][0]["status"]
            except (ValueError, KeyError, IndexError):
                status = ""
        wall = time.monotonic() - t0
        if run_id and not status.startswith("finished"):
            status = "timeout"
        details = "" if status == "finished:completed" or not run_id else \
            cli("log", run_id, "--show").stdout[-4000:]  # the ServerApp's log, while it lives
    finally:
        pids = []
        for pid in managed_superlinks(home):
            pids += [*descendants(pid), pid]
        survivors = terminate(list(dict.fromkeys(pids)))
    return RunOutcome(run_id, status, wall, details), survivors
