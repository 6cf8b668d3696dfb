"""Flower Deployment Engine end to end: 1 SuperLink + 3 SuperNodes on loopback, 2 rounds.

The same job also runs in-process (``runtime.sim.simulate``): ``metrics.jsonl`` must be
identical apart from timing keys, for fedit, ecolora and fedsa-lora, since both runtimes run the
one round driver (``runtime/driver.py``) and the same method object (one torch thread per
process, so the float sums are the same). Success is the run status from ``flwr ls``
(``flwr run`` exits 0 even when the ServerApp fails later). Every process is torn down by PID,
whatever happens.
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr (Flower) is not installed")

from flwr.common.config import flatten_dict  # noqa: E402

from ecolora.runtime.flower.config import from_run_config  # noqa: E402
from ecolora.runtime.flower.local import (  # noqa: E402
    LocalDeployment,
    alive,
    executable,
    free_port,
)

APP = Path(__file__).resolve().parents[1] / "apps" / "flower"
JOB = {"model.threads": 1, "fed.clients": 3, "fed.rounds": 2, "fed.local_steps": 2,
       "fed.eval_every": 1, "data.train_examples": 60, "data.eval_examples": 16,
       "flower.join-timeout": 90.0, "flower.round-timeout": 120.0}
WALL: dict[str, dict[str, float]] = {}


def app_defaults() -> dict:
    """The run-config Flower starts from: the app's [tool.flwr.app.config], flattened."""
    project = tomllib.loads((APP / "pyproject.toml").read_text(encoding="utf-8"))
    return flatten_dict(project["tool"]["flwr"]["app"]["config"])


def job(method: str, model: Path, data: Path, out: Path, **extra: object) -> dict:
    return {"method": method, "model.name": str(model), "data.dataset": str(data),
            "flower.out": str(out), **JOB, **extra}


def untimed(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("compute_s", "wall_s")} for r in rs]


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    for name in ("flower-superlink", "flower-supernode", "flwr"):
        try:
            executable(name)
        except FileNotFoundError as exc:
            pytest.skip(f"Flower CLI missing: {exc}")
    dep = LocalDeployment(tmp_path_factory.mktemp("flower"), nodes=3)
    pids: list[int] = []
    try:
        dep.start()
        yield dep
    finally:
        pids = dep.all_pids()
        survivors = dep.stop()
        print_wall()
    assert not survivors, f"processes left running: {survivors}"
    assert not [p for p in pids if alive(p)]


def print_wall() -> None:
    for method, w in WALL.items():
        print(f"\n[flower vs in-process] {method}: flower {w['flower']:.1f}s, "
              f"in-process {w['sim']:.1f}s, ratio {w['flower'] / w['sim']:.1f}x")


@pytest.mark.parametrize("method", ["ecolora", "fedit", "fedsa-lora"])
def test_flower_matches_simulator(method, deployment, tiny_model_dir, alpaca_file, tmp_path):
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import simulate

    out = tmp_path / "flower"
    overrides = job(method, tiny_model_dir, alpaca_file, out)
    outcome = deployment.run(APP, overrides, timeout=240, done_file=out / "summary.json")
    assert outcome.status == "finished:completed", (outcome, deployment.logs())
    rows = rows_of(out)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in rows] == [1, 2]
    assert summary["runtime"] == "flower" and summary["config"]["method"] == method
    assert all(r["clients"] == 3 and not r["rejected"] and not r.get("dropped") for r in rows)
    for name in ("samples.jsonl", "curves.png", "checkpoint.safetensors",
                 "adapter/adapter_model.safetensors"):
        assert (out / name).is_file(), name

    cfg, _ = from_run_config({**app_defaults(), **overrides})  # what Flower fused
    t0 = time.perf_counter()
    sim = json.loads(json.dumps(simulate(build(cfg))["rounds"]))
    WALL[method] = {"flower": outcome.wall_s, "sim": time.perf_counter() - t0}

    assert untimed(rows) == untimed(sim)  # one driver: the same rows on both runtimes
    assert summary["final_eval_loss"] == rows[-1]["eval_loss"]
    if method == "fedsa-lora":  # eval messages (full state to every node) are not counted
        return

    # Flower's own counters see our payloads plus its per-message framing: never less, and the
    # difference per message (3 queries + 3 replies at join, 2 per client per round) is small.
    traffic = deployment.traffic(outcome.run_id)
    ours = summary["total_upload_bytes"] + summary["total_download_bytes"]
    messages = 6 + 2 * sum(r["clients"] for r in rows)
    overhead = (traffic["total-bytes"] - ours) / messages
    print(f"[flower traffic] {method}: flower {traffic['total-bytes']} B, ecolora {ours} B, "
          f"overhead {overhead:.0f} B/message")
    assert traffic["total-bytes"] >= ours
    assert overhead < 16_384


def test_lossy_broadcast_and_resync_match_the_simulator(deployment, tiny_model_dir,
                                                        alpaca_file, tmp_path):
    """A lossy broadcast (``compress_download``) under partial participation: the nodes apply
    sparse 8-bit global changes to the copies they keep, and a node back after a missed round
    is resynced with the full state of that copy. Every row equals the simulator's, whose
    clients train from the server's copy directly."""
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import sample_clients, simulate

    out = tmp_path / "flower"
    overrides = job("ecolora", tiny_model_dir, alpaca_file, out, **{
        "fed.rounds": 4, "fed.seed": 2, "fed.participation": 0.67,
        "compress.compress_download": True})
    sampled = [set(sample_clients(2, t, 3, 0.67)) for t in range(4)]
    assert any(k in sampled[t + 1] and k not in sampled[t] and any(k in s for s in sampled[:t])
               for t in range(1, 3) for k in range(3))  # someone comes back after a miss
    outcome = deployment.run(APP, overrides, timeout=300, done_file=out / "summary.json")
    assert outcome.status == "finished:completed", (outcome, deployment.logs())
    cfg, _ = from_run_config({**app_defaults(), **overrides})
    assert cfg.compress.compress_download and cfg.fed.participation == 0.67
    sim = json.loads(json.dumps(simulate(build(cfg))["rounds"]))
    assert untimed(rows_of(out)) == untimed(sim)


@pytest.mark.parametrize("method", ["ecolora", "fedsa-lora"])
def test_nodes_playing_several_clients(method, deployment, tiny_model_dir, alpaca_file,
                                       tmp_path):
    """3 SuperNodes, 4 clients: nodes play clients {0, 3}, {1}, {2} (the Simulation Engine's
    2 default nodes for 10 clients work the same way), each with its own residual and local
    tensors, and the rows are still the simulator's."""
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import simulate

    out = tmp_path / "flower"
    overrides = job(method, tiny_model_dir, alpaca_file, out,
                    **{"fed.clients": 4})
    outcome = deployment.run(APP, overrides, timeout=600, done_file=out / "summary.json")
    assert outcome.status == "finished:completed", (outcome, deployment.logs())
    rows = rows_of(out)
    assert [r["clients"] for r in rows] == [4, 4] and not any(r["rejected"] for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["nodes"]) == 4 and len(set(summary["nodes"].values())) == 3
    cfg, _ = from_run_config({**app_defaults(), **overrides})
    sim = json.loads(json.dumps(simulate(build(cfg))["rounds"]))

    assert untimed(rows) == untimed(sim)


def test_bad_config_fails_the_run(deployment, tiny_model_dir, alpaca_file, tmp_path):
    """A run-config error ends the run as failed (status), not as a hang or a silent success."""
    out = tmp_path / "bad"
    overrides = job("ecolora", tiny_model_dir, alpaca_file, out, **{"compress.rho_b": 1.5})
    outcome = deployment.run(APP, overrides, timeout=90)
    assert outcome.status.startswith("finished:") and outcome.status != "finished:completed", (
        outcome)
    assert not (out / "summary.json").exists()


def test_supernode_killed_mid_round(tiny_model_dir, alpaca_file, tmp_path):
    """SIGKILL one SuperNode (and its ClientApp) once round 2 started: round 2 closes with the
    other two after flower.round-timeout and the run completes."""
    out = tmp_path / "kill"
    overrides = job("ecolora", tiny_model_dir, alpaca_file, out,
                    **{"flower.round-timeout": 60.0})
    with LocalDeployment(tmp_path / "dep", nodes=3) as dep:
        run_id = dep.submit(APP, overrides)
        deadline = time.monotonic() + 180
        rows = out / "metrics.jsonl"  # the run folder writes it empty at start: wait for round 1

        def round_one_done() -> bool:
            return rows.exists() and rows.read_text(encoding="utf-8").strip() != ""

        while time.monotonic() < deadline and not round_one_done():
            time.sleep(0.2)
        assert round_one_done(), dep.logs()
        dep.kill_node(2)
        outcome = dep.wait(run_id, timeout=180, done_file=out / "summary.json")
        assert outcome.status == "finished:completed", (outcome, dep.logs())
    r1, r2 = rows_of(out)
    assert r1["clients"] == 3 and r2["clients"] == 2
    assert "2" in r2["dropped"]


def make_tls(folder: Path, nodes: int) -> list[Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and one EC key pair per SuperNode."""
    import shutil
    import subprocess

    for tool in ("openssl", "ssh-keygen"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not available")
    folder.mkdir(parents=True, exist_ok=True)
    san = folder / "san.ext"
    san.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for argv in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=ecolora-test-ca", "-keyout", "ca.key", "-out", "ca.crt"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-keyout", "server.key", "-out", "server.csr"],
        ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "1", "-out", "server.pem", "-extfile", str(san)],
        *[["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", f"node{i}"]
          for i in range(nodes)],
    ):
        subprocess.run(argv, cwd=folder, check=True, capture_output=True, timeout=60)
    return [folder / f"node{i}" for i in range(nodes)]


def test_tls_and_supernode_auth(tiny_model_dir, alpaca_file, tmp_path):
    """TLS on every API, SuperNode auth on: registered nodes run the job; a node whose key was
    never registered is refused (it gives up after --max-retries and never joins)."""
    keys = make_tls(tmp_path / "tls", nodes=3)
    out = tmp_path / "tls-run"
    overrides = job("ecolora", tiny_model_dir, alpaca_file, out, **{"fed.clients": 2})
    with LocalDeployment(tmp_path / "dep", nodes=2, tls=tmp_path / "tls",
                         node_keys=keys[:2]) as dep:
        intruder = dep._spawn("intruder", [
            executable("flower-supernode"), "--root-certificates", str(tmp_path / "tls/ca.crt"),
            "--superlink", f"127.0.0.1:{dep.port}", "--auth-supernode-private-key", str(keys[2]),
            "--max-retries", "2", "--host", "127.0.0.1", "--port", str(free_port()),
            "--node-config", "partition-id=1 num-partitions=2"], "intruder")
        outcome = dep.run(APP, overrides, timeout=180, done_file=out / "summary.json")
        assert outcome.status == "finished:completed", (outcome, dep.logs())
        nodes = json.loads((out / "summary.json").read_text())["nodes"]
        assert len(nodes) == 2
        intruder.wait(timeout=60)
        log = (tmp_path / "dep" / "intruder.log").read_text(errors="replace")
        assert "Connection attempt failed" in log and "SuperNode ID" not in log, log[-2000:]
