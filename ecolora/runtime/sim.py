"""In-process simulation: K seeded clients share one base model in memory (spec §7 loop).

Per-client state is only what the method needs (the error-feedback residual) and the round the
client last synced, which decides whether it downloads the last broadcast delta or the full
global adapter.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ecolora.methods import ServerState
from ecolora.runtime.checkpoint import SimState
from ecolora.runtime.evaluation import emit_samples, eval_options, evaluate_global
from ecolora.runtime.network import round_comm_s
from ecolora.runtime.rounds import client_round, server_round
from ecolora.runtime.setup import RunSetup
from ecolora.train.local import evaluate
from ecolora.train.model import get_params


def sample_clients(seed: int, round_: int, num_clients: int, fraction: float) -> list[int]:
    m = max(1, round(fraction * num_clients))
    if m >= num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng([seed, 1_000_003, round_])
    return sorted(rng.choice(num_clients, size=m, replace=False).tolist())


def evaluate_clients(setup: RunSetup, params: list[np.ndarray],
                     local: dict[int, list[np.ndarray] | None]) -> dict[str, float]:
    """Personalized methods (FedSA-LoRA keeps B per client): each client's model, then the mean.

    Every client is evaluated with the global shared tensors and its own local ones (a client
    never sampled still has the initial ones) on the common eval set; the row reports the
    unweighted mean over clients, as FedSA-LoRA's evaluation averages per-client results.
    """
    pad = setup.tokenizer.pad_token_id
    setup.threads.use_best()
    scores = [evaluate(setup.model, setup.method.client_start(params, local.get(k)),
                       setup.eval_data, pad, **eval_options(setup))
              for k in range(setup.cfg.fed.clients)]
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}


def simulate(setup: RunSetup, on_round: Callable[[dict], None] | None = None,
             resume: SimState | None = None,
             on_checkpoint: Callable[[SimState], None] | None = None) -> dict:
    """Run every round; returns {"rounds": [...], "initial": {...}, "params": final global}.

    ``resume`` continues from a checkpoint's state; ``on_checkpoint`` sees the state after every
    round (runtime/checkpoint.py decides when to save it).
    """
    cfg = setup.cfg
    method = setup.method
    if resume is None:
        params = get_params(setup.model)
        resume = SimState(0, params, evaluate_global(setup, params, 0))
    params, initial, rows = resume.params, resume.initial, resume.rows
    residuals = resume.residuals
    local = resume.local  # tensors kept per client (FedSA-LoRA's B)
    synced = resume.synced  # client -> round whose global it holds
    last_broadcast = resume.last_broadcast
    server: ServerState = resume.server
    for t in range(resume.round, cfg.fed.rounds):
        sampled = sample_clients(cfg.fed.seed, t, cfg.fed.clients, cfg.fed.participation)
        fresh = [synced.get(k) == t - 1 and t > 0 for k in sampled]
        # a client that missed rounds gets today's whole adapter; its size moves with the values
        full_state = 0 if all(fresh) else len(method.encode_full_state(params, t))
        down = [last_broadcast if ok else full_state for ok in fresh]
        results = []
        for k in sampled:
            res = client_round(setup, params, k, t, residuals.get(k), local.get(k),
                               synced.get(k))
            residuals[k] = res.upload.residual
            local[k] = res.local
            results.append(res)
        uploads = [(r.client, r.upload.payload, setup.weights[r.client]) for r in results]
        srv = server_round(method, uploads, t, server, params)
        params = srv.params
        last_broadcast = len(srv.broadcast)
        for k in sampled:
            synced[k] = t
        up = [len(r.upload.payload) for r in results]
        row = {
            "round": t + 1,
            "method": cfg.method,
            "clients": len(sampled),
            "train_loss": float(np.mean([r.loss for r in results])),
            "upload_bytes": int(sum(up)),
            "upload_nonzeros": int(sum(r.upload.nonzeros for r in results)),
            "download_bytes": int(sum(down)),
            "upload_bytes_max": max(up),  # the slowest transfer sets the round's comm time
            "download_bytes_max": max(down),
            "compute_s": max(r.compute_s for r in results),
            "comm_s": round_comm_s(up, down, cfg.network),
            "rejected": srv.rejected,
        }
        if (t + 1) % cfg.fed.eval_every == 0 or t + 1 == cfg.fed.rounds:
            if method.local:
                row.update(evaluate_clients(setup, params, local))
                emit_samples(setup, params, t + 1)
            else:
                row.update(evaluate_global(setup, params, t + 1))
        rows.append(row)
        if on_round:
            on_round(row)
        if on_checkpoint:
            on_checkpoint(SimState(t + 1, params, initial, rows, residuals, local, synced,
                                   last_broadcast, server))
    return {"rounds": rows, "initial": initial, "params": params}
