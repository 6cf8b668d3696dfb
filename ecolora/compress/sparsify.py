"""Adaptive sparsification tailored to LoRA's A and B matrices (spec §5).

Top-k by magnitude is contractive (spec §5.1), which the paper's convergence analysis assumes.
A and B get separate budgets ``rho_a``/``rho_b`` because they behave differently: B starts at zero
and grows, A starts random and moves little (spec §5.2; which is sparsified harder is [INF]).
"Adaptive" over time is open (Q2), so all three readings are here: a density schedule from
``rho_start`` down to the target (``linear``/``exp``, DGC-style warm-up) and ``energy_split``,
which keeps the total budget but divides it between A and B in proportion to update energy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ecolora.compress.layout import AdapterLayout
from ecolora.compress.segments import Piece
from ecolora.config import CompressConfig


def density_at(target: float, round_: int, cfg: CompressConfig) -> float:
    """Density for round ``round_`` under ``cfg.sparsity_schedule`` (spec §5.3)."""
    if cfg.sparsity_schedule in ("constant", "energy_split") or round_ >= cfg.schedule_rounds:
        return target
    frac = round_ / cfg.schedule_rounds
    start = max(cfg.rho_start, target)
    if cfg.sparsity_schedule == "linear":
        return start + (target - start) * frac
    return start * (target / start) ** frac  # exp: geometric interpolation


def keep_count(density: float, n: int) -> int:
    """k = ceil(density * n), at least one entry of a non-empty range."""
    return min(n, max(1, math.ceil(density * n))) if n else 0


def topk_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the k largest |x| (ties resolved by argpartition, deterministically)."""
    n = x.size
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(np.abs(x), n - k)[n - k :]
    return np.sort(part).astype(np.int64)


def piece_budgets(
    values: Sequence[np.ndarray], pieces: Sequence[Piece], layout: AdapterLayout,
    round_: int, cfg: CompressConfig,
) -> list[int]:
    """Kept entries per piece: per-kind densities, scheduled, or energy-split (spec §5.2-5.3)."""
    kinds = [layout.tensors[p.tensor].kind for p in pieces]
    rho = {"A": density_at(cfg.rho_a, round_, cfg), "B": density_at(cfg.rho_b, round_, cfg)}
    rho["other"] = rho["B"]
    if cfg.sparsity_schedule == "energy_split":
        rho = _energy_split(values, pieces, kinds, rho)
    return [keep_count(rho[kind], p.size) for kind, p in zip(kinds, pieces, strict=True)]


def _energy_split(values, pieces, kinds, rho) -> dict[str, float]:
    """Same total budget as the fixed rho_a/rho_b, shared in proportion to ||u_X||^2."""
    size = {"A": 0, "B": 0}
    energy = {"A": 0.0, "B": 0.0}
    for v, p, kind in zip(values, pieces, kinds, strict=True):
        key = "A" if kind == "A" else "B"
        size[key] += p.size
        energy[key] += float(np.dot(v, v))
    budget = rho["A"] * size["A"] + rho["B"] * size["B"]
    total = energy["A"] + energy["B"]
    if total <= 0 or not size["A"] or not size["B"]:
        return rho
    out = {key: min(1.0, budget * energy[key] / total / size[key]) for key in size}
    out = {key: max(v, 1e-6) for key, v in out.items()}
    out["other"] = out["B"]
    return out


def sparsify(
    values: Sequence[np.ndarray], pieces: Sequence[Piece], layout: AdapterLayout,
    round_: int, cfg: CompressConfig,
) -> list[np.ndarray | None]:
    """Kept indices per piece (None = keep all, sent dense) under ``cfg.topk_scope``."""
    budgets = piece_budgets(values, pieces, layout, round_, cfg)
    if cfg.topk_scope == "per_segment" and len(pieces) > 1:
        flat = np.concatenate([np.asarray(v) for v in values])
        chosen = topk_indices(flat, sum(budgets))
        bounds = np.cumsum([0] + [p.size for p in pieces])
        out = []
        for j, p in enumerate(pieces):
            sel = chosen[(chosen >= bounds[j]) & (chosen < bounds[j + 1])] - bounds[j]
            out.append(None if sel.size == p.size else sel)
        return out
    return [
        None if k >= p.size else topk_indices(np.asarray(v), k)
        for v, p, k in zip(values, pieces, budgets, strict=True)
    ]
