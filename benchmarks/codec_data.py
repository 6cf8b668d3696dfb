"""Data for ``benchmarks/codec.py``: synthetic LoRA-shaped deltas, real deltas of the embedded
model captured at run time (nothing committed), and the top-k or random masks taken from them."""

from __future__ import annotations

import math

import numpy as np

from ecolora.compress.sparsify import topk_indices

D_MODEL, RANK = 4096, 16  # one synthetic LoRA pair: B is (d_out x r), A is (r x d_in)


def lora_deltas(pairs: int, seed: int) -> list[np.ndarray]:
    """B and A deltas whose rows/columns have very different scales (heavy-tailed features)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(pairs):
        rows = rng.lognormal(0.0, 1.5, D_MODEL).astype(np.float32)  # output features of B
        cols = rng.lognormal(0.0, 0.7, RANK).astype(np.float32)  # rank directions
        b = rows[:, None] * cols[None, :] * rng.standard_normal((D_MODEL, RANK), np.float32)
        feat = rng.lognormal(0.0, 1.0, D_MODEL).astype(np.float32)  # input features of A
        feat[rng.choice(D_MODEL, D_MODEL // 100, replace=False)] *= 10.0  # outlier channels
        dirs = rng.lognormal(0.0, 0.7, RANK).astype(np.float32)
        a = dirs[:, None] * feat[None, :] * rng.standard_normal((RANK, D_MODEL), np.float32)
        out += [b, a]
    return out


def real_deltas(clients: int, rounds: int, seed: int) -> list[np.ndarray]:
    """What top-k sees in a real run: the embedded model, default method (error feedback on),
    ``clients`` x ``rounds`` local rounds of 5 AdamW steps with server rounds between; per
    client and round, local delta + error-feedback residual, for every LoRA tensor."""
    from ecolora.config import RunConfig
    from ecolora.methods import ServerState
    from ecolora.runtime.rounds import client_round, server_round
    from ecolora.runtime.setup import build
    from ecolora.train.model import get_params

    cfg = RunConfig.from_dict({"fed": {"clients": clients, "rounds": rounds, "seed": seed},
                               "data": {"train_examples": 100 * clients, "eval_examples": 10}})
    setup = build(cfg)
    captured: list[list[np.ndarray]] = []
    original, decay = setup.method.client_update, setup.method.cfg.residual_decay

    def capture(delta, residual, *args):
        captured.append([d + decay * r for d, r in zip(delta, residual, strict=True)]
                        if residual is not None else [d.copy() for d in delta])
        return original(delta, residual, *args)

    setup.method.client_update = capture
    params, state, residuals = get_params(setup.model), ServerState(), {}
    for t in range(rounds):
        ups = []
        for k in range(clients):
            upload = client_round(setup, params, k, t, residuals.get(k)).upload
            residuals[k] = upload.residual
            ups.append((k, upload.payload, setup.weights[k]))
        params = server_round(setup.method, ups, t, state, params).params
    shapes = [spec.shape for spec in setup.layout.tensors]
    return [d.reshape(s) for ds in captured for d, s in zip(ds, shapes, strict=True)]


def masks(kind: str, density: float, deltas: list[np.ndarray], seed: int):
    """Per tensor (n, row length, sorted kept indices): top-k of the deltas, or random masks
    with the same n and k."""
    rng = np.random.default_rng(seed)
    out = []
    for d in deltas:
        n, k = d.size, max(1, math.ceil(density * d.size))
        if kind == "random":
            idx = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
        else:
            idx = topk_indices(d.ravel(), k)
        out.append((n, d.shape[-1], idx))
    return out


def log2_binom(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def bitmask(n: int, idx: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[idx] = True
    return m
