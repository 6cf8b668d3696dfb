"""The Flower ClientApp: a SuperNode plays client k of the project's partition (or several).

The node's ``--node-config 'partition-id=p num-partitions=N'`` says which clients it is: k = p,
p + N, p + 2N, ... below fed.clients (``protocol.hosted``), so one node per client when N equals
fed.clients and a few clients per node on the Simulation Engine's 2 default SuperNodes. The data
split itself is the project's (``partition_indices`` over the whole training file, seeded), so
every node computes the same split and takes part k, exactly like the simulator's client k.

Flower starts a fresh ClientApp process per message, so whatever must outlive a round lives in
``context.state`` (kept by the SuperNode): the global adapter the node last synced to (to apply
the next broadcast *delta* to), the method's error-feedback residual and a personalized
method's local tensors (FedSA-LoRA's B, which never leave the node), all as ArrayRecords, one
set per hosted client (``protocol.state_key``). The server never has two messages in flight to
one node (``server_app.waves``), so these records are never written concurrently. With
node-config ``state-dir`` they are also snapshotted to disk, so that a resumed run (a new run,
with empty ``context.state``) continues from them exactly (``node_state``).
Personalized methods are evaluated where those tensors are: ``@app.evaluate()``.
The training step and the encoding are ``rounds.client_round`` and the method object, unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from ecolora.config import RunConfig
from ecolora.errors import ConfigError, CorruptPayloadError
from ecolora.runtime.flower import node_state
from ecolora.runtime.flower import protocol as P
from ecolora.runtime.flower.config import from_run_config

app = ClientApp()

_SETUPS: dict[str, Any] = {}  # one RunSetup per config, should a process serve several messages


def node_partition(context: Context) -> tuple[int, int]:
    """(partition-id, num-partitions) from the SuperNode's node-config, validated."""
    cfg = context.node_config
    try:
        pid, num = int(cfg["partition-id"]), int(cfg["num-partitions"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("start the SuperNode with --node-config "
                          "'partition-id=K num-partitions=N' (integers)") from None
    if not 0 <= pid < num:
        raise ConfigError(f"partition-id {pid} is outside [0, {num})")
    return pid, num


@app.query()
def hello(msg: Message, context: Context) -> Message:
    """Tell the server which client this node is (the server cannot read node-config)."""
    pid, num = node_partition(context)
    return Message(P.hello_reply(pid, num), reply_to=msg)


def _setup(cfg: RunConfig) -> Any:
    from ecolora.runtime.setup import build

    key = json.dumps(cfg.to_dict(), sort_keys=True)
    if key not in _SETUPS:
        _SETUPS.clear()
        _SETUPS[key] = build(cfg)
    return _SETUPS[key]


def _arrays(state: RecordDict, key: str, client: int) -> list[np.ndarray] | None:
    rec = state.get(P.state_key(key, client))
    return rec.to_numpy_ndarrays() if isinstance(rec, ArrayRecord) else None


def _held_round(state: RecordDict, client: int) -> int | None:
    """The round client ``client`` last trained in (whose global it holds); None before."""
    sync = state.get(P.state_key(P.STATE_SYNC, client))
    return int(sync["round"]) if isinstance(sync, ConfigRecord) else None


def synced_global(setup: Any, ins: P.TrainIns, state: RecordDict) -> list[np.ndarray]:
    """The global adapter of round ``ins.round``: a full state, or our copy plus the delta."""
    from ecolora.train.model import get_params

    method = setup.method
    if ins.sync == P.SYNC_FULL:
        template = get_params(setup.model)
        return method.apply_broadcast(ins.model, template, replace=True)
    held = _arrays(state, P.STATE_GLOBAL, ins.client)
    held_round = _held_round(state, ins.client)
    if held is None or held_round != ins.base_round:
        raise CorruptPayloadError("base-round", 0, f"client {ins.client} holds the global of "
                                  f"round {held_round}, delta expects {ins.base_round}; "
                                  "the server must send the full state")
    return method.apply_broadcast(ins.model, held)


def check_hosted(context: Context, cfg: RunConfig, client: int) -> None:
    """The server may only address clients this node plays."""
    pid, num = node_partition(context)
    mine = P.hosted(pid, num, cfg.fed.clients)
    if client not in mine:
        raise ConfigError(f"server addressed client {client}, this node (partition-id {pid} "
                          f"of {num}) plays clients {mine}")


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One local round via ``client_round``; the reply carries the method's encoded bytes."""
    from ecolora.runtime.rounds import client_round

    cfg, opts = from_run_config(context.run_config)
    ins = P.parse_train(msg.content)
    k, state = ins.client, context.state
    check_hosted(context, cfg, k)
    folder = _node_state(context, cfg, opts, k, ins.resumed_from)
    setup = _setup(cfg)
    last_round = _held_round(state, k)
    params = synced_global(setup, ins, state)
    res = client_round(setup, params, k, ins.round, _arrays(state, P.STATE_RESIDUAL, k),
                       _arrays(state, P.STATE_LOCAL, k), last_round=last_round)
    state[P.state_key(P.STATE_GLOBAL, k)] = ArrayRecord(params)
    state[P.state_key(P.STATE_SYNC, k)] = ConfigRecord({"round": ins.round})
    if res.upload.residual is not None:
        state[P.state_key(P.STATE_RESIDUAL, k)] = ArrayRecord(res.upload.residual)
    if res.local is not None:  # personalized tensors never leave the node
        state[P.state_key(P.STATE_LOCAL, k)] = ArrayRecord(res.local)
    if folder is not None:
        node_state.save(folder, state, k, ins.round, cfg.fed.checkpoint_every)
    payload = _maybe_corrupt(res.upload.payload, context)
    reply = P.TrainRes(ins.round, k, payload, res.loss, res.upload.nonzeros, res.compute_s)
    return Message(P.train_reply(reply), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """A personalized method's eval round: this client's own model on the common eval set."""
    from ecolora.runtime.evaluation import evaluate_client
    from ecolora.train.model import get_params

    cfg, opts = from_run_config(context.run_config)
    round_, client, model, resumed_from = P.parse_eval(msg.content)
    check_hosted(context, cfg, client)
    _node_state(context, cfg, opts, client, resumed_from)
    setup = _setup(cfg)
    params = setup.method.apply_broadcast(model, get_params(setup.model), replace=True)
    metrics = evaluate_client(setup, params, _arrays(context.state, P.STATE_LOCAL, client))
    return Message(P.eval_reply(round_, client, metrics), reply_to=msg)


def _node_state(context: Context, cfg: RunConfig, opts: Any, client: int,
                resumed_from: int) -> Path | None:
    """Where this node snapshots ``client``'s state (node-config ``state-dir``), or None. In a
    resumed run a client with no state yet in this run first gets its snapshot back."""
    root = context.node_config.get("state-dir")
    if not root:
        return None
    key = node_state.run_key(cfg, str(opts.out_dir(cfg)))
    folder = node_state.client_dir(str(root), key, client)
    if resumed_from and _held_round(context.state, client) is None:
        node_state.restore(folder, context.state, client, resumed_from)
    return folder


def _maybe_corrupt(payload: bytes, context: Context) -> bytes:
    """Fault injection for deployment tests: node-config ``ecolora-fault="corrupt"`` flips a
    byte, so the server's rejection path is exercised end to end over real Flower transport."""
    if context.node_config.get("ecolora-fault") == "corrupt" and len(payload) > 30:
        return payload[:25] + bytes([payload[25] ^ 0xFF]) + payload[26:]
    return payload
