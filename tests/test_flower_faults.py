"""The Flower ServerApp/ClientApp logic against an in-process Grid: fast, and faults on demand.

``LoopbackGrid`` hands each message straight to the real ``client_app.app`` with a per-node
``Context`` (node-config, persistent ``state``), the way a SuperNode would, and can make a node
vanish (no reply: the round closes after ``flower.round-timeout``), corrupt its payload, or send
a reply of the wrong shape. The rounds must close with the remaining clients, bad payloads be
rejected with a reason, and a node that missed a round be resynced with the full state.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr (Flower) is not installed")

from flwr.app import Context, Error, Message, RecordDict  # noqa: E402
from flwr.common.config import flatten_dict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from ecolora.runtime.flower import client_app, server_app  # noqa: E402
from ecolora.runtime.flower import protocol as P  # noqa: E402
from ecolora.runtime.flower.config import from_run_config  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "apps" / "flower"
K = 3


class LoopbackGrid(Grid):
    """A Grid whose SuperNodes are ``client_app.app`` calls in this process."""

    def __init__(self, run_config: dict, node_config: dict[int, dict] | None = None,
                 silent: dict[int, set[int]] | None = None, garbled: set[int] = frozenset()):
        self.contexts = {
            100 + k: Context(run_id=1, node_id=100 + k, state=RecordDict(), run_config=run_config,
                             node_config={"partition-id": k, "num-partitions": K,
                                          **(node_config or {}).get(k, {})})
            for k in range(K)}
        self.silent = silent or {}  # node -> train rounds it never answers (crash/partition)
        self.garbled = garbled  # nodes whose train replies have the wrong shape
        self.inbox: dict[str, Message] = {}
        self.train_calls: dict[int, int] = {}
        self.syncs: list[tuple[int, int, str, int]] = []  # (round, node, sync, len(model))

    def create_message(self, *args, **kwargs):  # pragma: no cover - not used by the app
        raise NotImplementedError

    def set_run(self, run_id: int) -> None:  # pragma: no cover
        raise NotImplementedError

    @property
    def run(self):  # pragma: no cover
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):  # pragma: no cover - app polls itself
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid  # the SuperLink assigns ids
            self.inbox[mid] = msg
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = []
        for mid in list(message_ids):
            msg = self.inbox.pop(mid, None)
            if msg is None:
                continue
            node = msg.metadata.dst_node_id
            if msg.metadata.message_type == "train":
                t = self.train_calls[node] = self.train_calls.get(node, -1) + 1
                ins = P.parse_train(msg.content)
                self.syncs.append((ins.round, node, ins.sync, len(ins.model)))
                if t in self.silent.get(node, set()):
                    continue  # the reply never comes
            try:
                reply = client_app.app(msg, self.contexts[node])
            except Exception as exc:  # what flwr-clientapp turns into an error reply
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"),
                                reply_to=msg)
            if node in self.garbled and msg.metadata.message_type == "train":
                reply = Message(RecordDict(), reply_to=msg)
            replies.append(reply)
        return replies


@pytest.fixture(autouse=True)
def task_identity():
    """Messages read the run/node/task ids of the current Flower process."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def run_config(model: Path, data: Path, out: Path, **extra: object) -> dict:
    project = tomllib.loads((APP / "pyproject.toml").read_text(encoding="utf-8"))
    flat = flatten_dict(project["tool"]["flwr"]["app"]["config"])
    return {**flat, "model.name": str(model), "data.dataset": str(data), "flower.out": str(out),
            "fed.clients": K, "fed.rounds": 3, "fed.local_steps": 1, "fed.eval_every": 1,
            "data.train_examples": 60, "data.eval_examples": 8, "flower.round-timeout": 0.5,
            "flower.join-timeout": 5.0, **extra}


def run(grid: LoopbackGrid, rc: dict) -> dict:
    cfg, opts = from_run_config(rc)
    return server_app.run_rounds(grid, cfg, opts)


def read_rows(out: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


TIMING = {"compute_s", "wall_s"}


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.parametrize("method", ["ecolora", "fedit", "fedsa-lora"])
def test_loopback_grid_matches_simulator(method, tiny_model_dir, alpaca_file, tmp_path):
    """The same driver on both runtimes: metrics.jsonl equal but for timing, same run folder."""
    import json

    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import simulate

    rc = run_config(tiny_model_dir, alpaca_file, tmp_path, method=method,
                    **{"fed.participation": 0.67})  # clients miss rounds: full-state resyncs
    summary = run(LoopbackGrid(rc), rc)
    rows = read_rows(tmp_path)
    sim = json.loads(json.dumps(simulate(build(from_run_config(rc)[0]))["rounds"]))
    assert untimed(rows) == untimed(sim)
    assert all(r["wall_s"] > 0 for r in rows)
    assert summary["rejected_uploads"] == 0 and summary["runtime"] == "flower"
    for name in ("summary.json", "config.json", "samples.jsonl", "curves.png",
                 "checkpoint.safetensors", "adapter/adapter_model.safetensors"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.parametrize("method", ["fedit", "ecolora", "fedsa-lora"])
def test_resume_after_the_server_died(method, tiny_model_dir, alpaca_file, tmp_path, monkeypatch):
    """ServerApp killed in round 3 after a checkpoint: ``flower.resume`` finishes the run with
    the uninterrupted metrics, except that round 3 resends every node the full state. The nodes
    (node-config ``state-dir``) restore EcoLoRA's residuals and FedSA-LoRA's local B from their
    snapshots of round 2, which a new run's empty ``context.state`` would have lost."""
    import ecolora.runtime.driver as driver

    ref = tmp_path / "ref"
    rc = run_config(tiny_model_dir, alpaca_file, ref, method=method,
                    **{"fed.checkpoint_every": 1, "fed.rounds": 4})
    disk = {k: {"state-dir": str(tmp_path / "nodes" / str(k))} for k in range(K)}
    run(LoopbackGrid(rc), rc)
    out = tmp_path / "run"
    rc = {**rc, "flower.out": str(out)}
    real = driver.server_round

    def dies_in_round_3(method, uploads, round_, *args):
        if round_ == 2:
            raise KeyboardInterrupt
        return real(method, uploads, round_, *args)

    with monkeypatch.context() as m:
        m.setattr(driver, "server_round", dies_in_round_3)
        with pytest.raises(KeyboardInterrupt):
            run(LoopbackGrid(rc, node_config=disk), rc)
    assert len(read_rows(out)) == 2
    rc = {**rc, "flower.resume": True}
    grid = LoopbackGrid(rc, node_config=disk)  # a new run: empty context.state
    run(grid, rc)
    got, want = untimed(read_rows(out)), untimed(read_rows(ref))
    assert [r["round"] for r in got] == [1, 2, 3, 4]
    assert {(t, kind) for t, _, kind, _ in grid.syncs} == {(2, "full"), (3, "delta")}
    for a, b in zip(got, want, strict=True):
        if a["round"] == 3:  # what the nodes were sent differs, nothing else
            assert a["download_bytes"] == sum(n for t, _, _, n in grid.syncs if t == 2)
            for key in ("download_bytes", "download_bytes_max", "comm_s"):
                a[key] = b[key]
        assert a == b
    snapshots = sorted(p.name for p in (tmp_path / "nodes" / "0").rglob("round-*"))
    assert snapshots == ["round-2.safetensors", "round-3.safetensors"]  # 0-based; 0, 1 pruned


def test_silent_node_round_closes_and_resyncs(tiny_model_dir, alpaca_file, tmp_path):
    """Node of client 1 misses round 2: the round closes without it after the timeout, and in
    round 3 it gets the full state (it holds round 1's global) instead of the delta."""
    rc = run_config(tiny_model_dir, alpaca_file, tmp_path)
    grid = LoopbackGrid(rc, silent={101: {1}})
    run(grid, rc)
    r1, r2, r3 = read_rows(tmp_path)
    assert r2["clients"] == 2 and "1" in r2["dropped"] and "timeout" in r2["dropped"]["1"]
    sync = {(t, node): kind for t, node, kind, _ in grid.syncs}
    # round 1: everyone gets the full state; round 2: all synced, all get the delta;
    # round 3: node 101 missed round 2 and gets the full state, the others the delta
    assert [sync[0, n] for n in (100, 101, 102)] == ["full"] * 3
    assert [sync[1, n] for n in (100, 101, 102)] == ["delta"] * 3
    assert [sync[2, n] for n in (100, 101, 102)] == ["delta", "full", "delta"]
    for t, row in enumerate((r1, r2, r3)):  # the rows count exactly what was sent
        assert row["download_bytes"] == sum(n for r, _, _, n in grid.syncs if r == t)
    assert r3["clients"] == 3 and not r3.get("dropped") and not r3["rejected"]


def test_dead_node_every_round_still_completes(tiny_model_dir, alpaca_file, tmp_path):
    rc = run_config(tiny_model_dir, alpaca_file, tmp_path, **{"fed.rounds": 2})
    summary = run(LoopbackGrid(rc, silent={102: {0, 1}}), rc)
    assert [r["clients"] for r in read_rows(tmp_path)] == [2, 2]
    assert summary["final_eval_loss"] is not None


def test_corrupt_payload_rejected_round_goes_on(tiny_model_dir, alpaca_file, tmp_path):
    rc = run_config(tiny_model_dir, alpaca_file, tmp_path, **{"fed.rounds": 2})
    grid = LoopbackGrid(rc, node_config={2: {"ecolora-fault": "corrupt"}}, garbled={101})
    summary = run(grid, rc)
    for row in read_rows(tmp_path):
        assert "corrupt payload" in row["rejected"]["2"]  # bad bytes: the method's decoder
        assert "no ConfigRecord" in row["rejected"]["1"]  # bad reply shape: the protocol
        assert row["clients"] == 2 and not row.get("dropped")
    assert summary["rejected_uploads"] == 4


def test_client_error_is_dropped_not_fatal(tiny_model_dir, alpaca_file, tmp_path):
    """A ClientApp that raises (here: its run-config disagrees) costs that client, not the run."""
    rc = run_config(tiny_model_dir, alpaca_file, tmp_path, **{"fed.rounds": 1})
    grid = LoopbackGrid(rc)
    grid.contexts[100].run_config = {**rc, "compress.rho_b": 2.0}
    run(grid, rc)
    (row,) = read_rows(tmp_path)
    assert row["clients"] == 2 and "rho_b" in row["dropped"]["0"]


def test_wrong_partition_count_fails_at_join(tiny_model_dir, alpaca_file, tmp_path):
    from ecolora.errors import ConfigError

    rc = run_config(tiny_model_dir, alpaca_file, tmp_path)
    grid = LoopbackGrid(rc, node_config={1: {"num-partitions": 4}})
    with pytest.raises(ConfigError, match="num-partitions=4"):
        server_app.join(grid, *from_run_config(rc))

