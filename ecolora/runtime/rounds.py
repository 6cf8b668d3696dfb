"""One client's round and one server round: the steps every runtime shares (spec §7).

A runtime decides *where* these run (one process, Flower nodes); what they compute lives here
and in the method object, once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ecolora.errors import CorruptPayloadError
from ecolora.methods import ClientUpload, Method, ServerState
from ecolora.runtime.setup import RunSetup
from ecolora.train.local import lr_at, train_local


@dataclass
class ClientResult:
    client: int
    upload: ClientUpload
    loss: float
    compute_s: float
    local: list[np.ndarray] | None = None  # tensors the method keeps on the client (FedSA's B)


def client_rng(seed: int, client: int, round_: int) -> np.random.Generator:
    """Batches depend on (seed, client, round) only: any participation order gives the same run."""
    return np.random.default_rng([seed, client, round_])


def client_round(setup: RunSetup, global_params: list[np.ndarray], client: int, round_: int,
                 residual: list[np.ndarray] | None,
                 local: list[np.ndarray] | None = None,
                 last_round: int | None = None) -> ClientResult:
    """Train locally from the global adapters, then let the method encode the delta.

    ``local`` is what the method keeps on this client (FedSA-LoRA's own B); the method also says
    which tensors train at all (FFA-LoRA freezes A). ``last_round`` is the round this client
    last trained in, which made ``residual`` (None: never).
    """
    cfg = setup.cfg.fed
    method = setup.method
    t0 = time.perf_counter()
    total = cfg.rounds * cfg.local_steps
    lrs = [lr_at(round_ * cfg.local_steps + e, total, cfg.client_lr, cfg.lr_schedule)
           for e in range(cfg.local_steps)]
    start = method.client_start(global_params, local)
    with setup.threads.timed(cfg.local_steps):
        result = train_local(
            setup.model, start, setup.clients[client], cfg.local_steps, cfg.batch_size, lrs,
            cfg.weight_decay, setup.tokenizer.pad_token_id, client_rng(cfg.seed, client, round_),
            trainable=method.trainable_mask, objective=setup.objective,
        )
    delta = [p - g for p, g in zip(result.params, start, strict=True)]
    missed = 0 if last_round is None else max(0, round_ - last_round - 1)
    upload = method.client_update(delta, residual, client, round_, missed)
    return ClientResult(client, upload, result.loss, time.perf_counter() - t0,
                        method.keep_local(result.params))


@dataclass
class ServerResult:
    params: list[np.ndarray]
    broadcast: bytes
    rejected: dict[int, str]  # client -> reason


def server_round(method: Method, uploads: list[tuple[int, bytes, float]], round_: int,
                 state: ServerState, global_params: list[np.ndarray]) -> ServerResult:
    """Decode (rejecting bad payloads, never crashing), aggregate, encode, apply the broadcast."""
    decoded, senders, rejected = [], [], {}
    for client, payload, weight in uploads:
        try:
            decoded.append(method.decode_update(payload, client, round_, weight))
            senders.append(client)
        except CorruptPayloadError as exc:
            rejected[client] = str(exc)
    delta = method.aggregate(decoded, state, senders)
    broadcast = method.encode_broadcast(delta, round_, state)
    return ServerResult(method.apply_broadcast(broadcast, global_params), broadcast, rejected)
