"""What travels between the ServerApp and a ClientApp, as Flower records.

Everything the method produces is already the project's own self-describing, CRC-checked wire
format (``ecolora.compress.wire``), so a message carries it as one ``bytes`` value in a
``ConfigRecord``: Flower moves it, never re-encodes it, and the byte counts in ``metrics.jsonl``
are exactly the payload lengths the simulator counts. The small instruction fields next to it
(round, client index, which kind of global follows) are plain scalars.

Replies are untrusted: ``parse_reply`` turns any shape problem into ``CorruptPayloadError`` (the
same error a bad payload raises), so the server logs a reason and the round goes on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from ecolora.errors import CorruptPayloadError

KEY = "ecolora"  # the one ConfigRecord in every ecolora message
HELLO = "hello"  # query: which partition does this node hold?
METRICS = "metrics"  # MetricRecord in replies: Flower's own logs and tools can read them
SYNC_FULL, SYNC_DELTA = "full", "delta"
# context.state records a ClientApp keeps between rounds (it runs in a fresh process each time)
STATE_GLOBAL, STATE_RESIDUAL, STATE_SYNC = "ecolora-global", "ecolora-residual", "ecolora-sync"
STATE_LOCAL = "ecolora-local"  # tensors a personalized method keeps per client (FedSA's B)


def hosted(partition_id: int, num_partitions: int, clients: int) -> list[int]:
    """The clients a node serves: k with k mod num-partitions == partition-id.

    One SuperNode per client (num-partitions == fed.clients) is the deployment case; fewer
    nodes than clients is the Simulation Engine's default (2 SuperNodes), where each node then
    plays several clients, each with its own state records (``state_key``)."""
    return list(range(partition_id, clients, num_partitions))


def state_key(name: str, client: int) -> str:
    """The ``context.state`` record of one hosted client."""
    return f"{name}.{client}"


@dataclass
class TrainIns:
    round: int
    client: int
    sync: str  # SYNC_FULL: `model` is the fp32 full state; SYNC_DELTA: last broadcast bytes
    base_round: int  # with SYNC_DELTA, the round whose global the node must hold
    model: bytes
    resumed_from: int = 0  # a resumed run: the round of the server's checkpoint (node_state)


@dataclass
class TrainRes:
    round: int
    client: int
    payload: bytes
    loss: float
    nonzeros: int
    compute_s: float


def hello_content() -> RecordDict:
    return RecordDict({KEY: ConfigRecord({"action": HELLO})})


def hello_reply(partition_id: int, num_partitions: int) -> RecordDict:
    return RecordDict({KEY: ConfigRecord({"partition-id": partition_id,
                                          "num-partitions": num_partitions})})


def parse_hello(content: RecordDict) -> tuple[int, int]:
    rec = _record(content)
    return _int(rec, "partition-id"), _int(rec, "num-partitions")


def train_content(ins: TrainIns) -> RecordDict:
    return RecordDict({KEY: ConfigRecord({
        "round": ins.round, "client": ins.client, "sync": ins.sync,
        "base-round": ins.base_round, "model": ins.model, "resumed-from": ins.resumed_from,
    })})


def parse_train(content: RecordDict) -> TrainIns:
    rec = _record(content)
    sync = rec.get("sync")
    if sync not in (SYNC_FULL, SYNC_DELTA):
        raise CorruptPayloadError("sync", 0, f"unknown sync kind {sync!r}")
    return TrainIns(_int(rec, "round"), _int(rec, "client"), sync, _int(rec, "base-round"),
                    _bytes(rec, "model"), _int(rec, "resumed-from"))


def train_reply(res: TrainRes) -> RecordDict:
    return RecordDict({KEY: ConfigRecord({
        "round": res.round, "client": res.client, "payload": res.payload,
        "loss": float(res.loss), "nonzeros": int(res.nonzeros), "compute-s": float(res.compute_s),
    }), METRICS: MetricRecord({"train_loss": float(res.loss),
                               "upload_bytes": len(res.payload)})})


def eval_content(round_: int, client: int, model: bytes, resumed_from: int = 0) -> RecordDict:
    """Evaluate ``client``'s own model (the global ``model``, a full state, with its local
    tensors) on the common eval set: personalized methods only."""
    return RecordDict({KEY: ConfigRecord({"round": round_, "client": client, "model": model,
                                          "resumed-from": resumed_from})})


def parse_eval(content: RecordDict) -> tuple[int, int, bytes, int]:
    rec = _record(content)
    return (_int(rec, "round"), _int(rec, "client"), _bytes(rec, "model"),
            _int(rec, "resumed-from"))


def eval_reply(round_: int, client: int, metrics: dict[str, float]) -> RecordDict:
    return RecordDict({KEY: ConfigRecord({"round": round_, "client": client}),
                       METRICS: MetricRecord({k: float(v) for k, v in metrics.items()})})


def parse_eval_reply(content: RecordDict) -> tuple[int, int, dict[str, float]]:
    rec = _record(content)
    metrics = content.get(METRICS)
    if not isinstance(metrics, MetricRecord):
        raise CorruptPayloadError(METRICS, 0, f"message has no MetricRecord {METRICS!r}")
    values = {k: _float(metrics, k) for k in metrics}
    return _int(rec, "round"), _int(rec, "client"), values


def parse_train_reply(content: RecordDict) -> TrainRes:
    rec = _record(content)
    return TrainRes(_int(rec, "round"), _int(rec, "client"), _bytes(rec, "payload"),
                    _float(rec, "loss"), _int(rec, "nonzeros"), _float(rec, "compute-s"))


def _record(content: RecordDict) -> ConfigRecord:
    rec = content.get(KEY) if isinstance(content, RecordDict) else None
    if not isinstance(rec, ConfigRecord):
        raise CorruptPayloadError("record", 0, f"message has no ConfigRecord {KEY!r}")
    return rec


def _int(rec: ConfigRecord | MetricRecord, key: str) -> int:
    value = rec.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CorruptPayloadError(key, 0, f"expected an int, got {type(value).__name__}")
    return value


def _float(rec: ConfigRecord | MetricRecord, key: str) -> float:
    value = rec.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise CorruptPayloadError(key, 0, f"expected a number, got {type(value).__name__}")
    return float(value)


def max_message_bytes() -> int:
    """Largest payload either side accepts before decoding (``ECOLORA_MAX_MESSAGE_BYTES``,
    default 1 GiB): a bound on what a peer can make us hold, checked on both sides."""
    return int(os.environ.get("ECOLORA_MAX_MESSAGE_BYTES", 1 << 30))


def _bytes(rec: ConfigRecord, key: str) -> bytes:
    value = rec.get(key)
    if not isinstance(value, bytes):
        raise CorruptPayloadError(key, 0, f"expected bytes, got {type(value).__name__}")
    if len(value) > max_message_bytes():
        raise CorruptPayloadError(key, 0, f"{len(value)} bytes exceed the limit "
                                  f"{max_message_bytes()} (ECOLORA_MAX_MESSAGE_BYTES)")
    return value
