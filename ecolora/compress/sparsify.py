"""Adaptive sparsification tailored to LoRA's A and B matrices (spec §5).

Top-k by magnitude is contractive (spec §5.1), which the paper's convergence analysis assumes.
A and B get separate budgets ``rho_a``/``rho_b`` because they behave differently: B starts at zero
and grows, A starts random and moves little (spec §5.2; which is sparsified harder is [INF]).
"Adaptive" over time is open (Q2), so all three readings are here: a density schedule from
``rho_start`` down to the target (``linear``/``exp``, DGC-style warm-up) and ``energy_split``,
which keeps the total budget but divides it between A and B in proportion to update energy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from ecolora.compress.golomb import kiely_parameter
from ecolora.compress.layout import AdapterLayout
from ecolora.compress.segments import Piece
from ecolora.compress.values import ITEMSIZE
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


EXACT_BELOW = 1 << 14  # smaller inputs: one partition of everything is as fast as sampling
SAMPLE = 1 << 15  # entries sampled (at most n/8) to estimate the threshold
MARGIN_SIGMAS = 4.0  # threshold this many binomial standard deviations below the estimate
_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def magnitude_keys(x: np.ndarray) -> np.ndarray:
    """|x| as unsigned integers in the same order, so that comparisons are exact and total.

    Clearing the sign bit of an IEEE float gives an integer whose order is the order of |x|
    (-0 ties with +0, NaN sorts above +inf). Selecting on integers makes the tie rule of
    ``topk_indices`` well defined for every input, NaN included (a NaN is always kept, so a
    diverged client's payload is rejected by the decoder instead of silently dropping it).
    """
    a = np.ravel(np.asarray(x))
    if a.dtype.kind != "f" or a.dtype.itemsize not in _UINT:
        a = a.astype(np.float64)
    a = np.ascontiguousarray(a)
    uint = _UINT[a.dtype.itemsize]
    return a.view(uint) & uint(np.iinfo(uint).max >> 1)


def topk_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the k largest |x|; among equal |x| the lower indices win (spec §5.1).

    Exact, and fast on large inputs: a threshold estimated from a fixed-seed sample keeps
    about 1.1 k candidates, and only those are partitioned. The candidates provably contain
    the exact answer whenever at least k of them pass (every entry at least as large as the
    k-th largest does); otherwise the full partition runs. Same set as a stable sort by
    (-|x|, index) in every case; the sample only decides the speed.
    """
    keys = magnitude_keys(x)
    n = keys.size
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if n >= EXACT_BELOW:
        size = min(SAMPLE, n // 8)
        sample = keys[_sample_positions(n, size)]
        lam = size * k / n  # sampled entries expected at or above the k-th largest
        j = max(1, math.ceil(lam + MARGIN_SIGMAS * math.sqrt(lam) + 8))
        if j < size:
            threshold = np.partition(sample, size - j)[size - j]
            cand = np.flatnonzero(keys >= threshold)
            if cand.size >= k:
                return cand[_select(keys[cand], k)]
    return _select(keys, k)


@functools.lru_cache(maxsize=256)
def _sample_positions(n: int, size: int) -> np.ndarray:
    """Fixed-seed sample positions (the speed must not vary between calls), cached per shape:
    a payload has many tensors of few distinct sizes."""
    out = np.random.default_rng(0x5EED).integers(0, n, size=size)
    out.flags.writeable = False
    return out


def _select(keys: np.ndarray, k: int) -> np.ndarray:
    """Positions (ascending) of the k largest ``keys``, lowest positions first among ties."""
    m = keys.size
    kth = np.partition(keys, m - k)[m - k]
    keep = keys > kth
    need = k - int(np.count_nonzero(keep))
    keep[np.flatnonzero(keys == kth)[:need]] = True
    return np.flatnonzero(keep).astype(np.int64, copy=False)


DENSE_BITS = 16  # the budget's reference: FedIT's dense upload at 16 bits per value


def position_bits(p: float) -> float:
    """Expected Rice bits per kept position at density p (Kiely's b*, STC eq. 22): an upper
    bound on what the codec's searched Golomb parameter spends on random-like masks."""
    if p >= 1.0:
        return 0.0
    b = kiely_parameter(1 << 30, max(1, round(p * (1 << 30))))
    return b + 1.0 / (1.0 - (1.0 - p) ** (1 << b))


def sent_value_bits(cfg: CompressConfig) -> int:
    """Bits of one sent value: the value dtype's width, or the 8/4-bit code's."""
    return 8 * ITEMSIZE[cfg.value_dtype] if cfg.value_bits == 16 else cfg.value_bits


def budget_count(budget: float, n_segment: int, n_all: int, value_bits: int) -> int:
    """Most kept entries of an ``n_segment``-entry segment whose values and positions fit in
    ``budget`` times FedIT's dense upload of all ``n_all`` entries (ecolora's own, issue 12).

    The cost of k entries is k * (value_bits + position_bits(k / n)), increasing in k, so a
    bisection finds the largest k that fits; a dense segment has no positions. The bound holds
    before DEFLATE of the values and with Rice positions, so real payloads come out smaller.
    """
    allowed = budget * DENSE_BITS * n_all
    if n_segment == 0:
        return 0
    if n_segment * value_bits <= allowed:
        return n_segment
    lo, hi = 1, n_segment  # cost(lo) is assumed to fit: at least one entry is always sent
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid * (value_bits + position_bits(mid / n_segment)) <= allowed:
            lo = mid
        else:
            hi = mid
    return lo


def piece_budgets(
    values: Sequence[np.ndarray], pieces: Sequence[Piece], layout: AdapterLayout,
    round_: int, cfg: CompressConfig, shrink: float = 1.0,
) -> list[int]:
    """Kept entries per piece: per-kind densities, scheduled, or energy-split (spec §5.2-5.3).

    With ``cfg.upload_budget`` the segment's total comes from the bytes budget instead, and
    rho_a/rho_b (or energy_split) only say how it divides between A and B; warm-up schedules
    would overspend the first rounds' budget, so they do not apply. ``shrink`` scales the
    budgeted total down when an encoded payload came out over the budget (``Method``).
    """
    kinds = [layout.tensors[p.tensor].kind for p in pieces]
    if cfg.upload_budget:
        rho = {"A": cfg.rho_a, "B": cfg.rho_b}
    else:
        rho = {"A": density_at(cfg.rho_a, round_, cfg), "B": density_at(cfg.rho_b, round_, cfg)}
    rho["other"] = rho["B"]
    if cfg.sparsity_schedule == "energy_split":
        rho = _energy_split(values, pieces, kinds, rho)
    if cfg.upload_budget:
        sizes = [p.size for p in pieces]
        total = budget_count(cfg.upload_budget, sum(sizes), layout.numel, sent_value_bits(cfg))
        total = max(1, math.floor(total * shrink))
        weight = [rho[kind] * n for kind, n in zip(kinds, sizes, strict=True)]
        scale = total / sum(weight)
        if scale * max(rho.values()) >= 1.0:  # some kind would be dense: fill by kind
            return _fill(sizes, [rho[k] for k in kinds], total)
        return [min(n, math.floor(w * scale)) or min(n, 1)
                for n, w in zip(sizes, weight, strict=True)]
    return [keep_count(rho[kind], p.size) for kind, p in zip(kinds, pieces, strict=True)]


def _fill(sizes: list[int], rho: list[float], total: int) -> list[int]:
    """Split ``total`` so pieces of higher rho fill up first, the rest in proportion to size."""
    out = [0] * len(sizes)
    left = total
    for level in sorted(set(rho), reverse=True):
        group = [i for i, r in enumerate(rho) if r == level]
        room = sum(sizes[i] for i in group)
        take = min(room, left)
        for i in group:
            out[i] = min(sizes[i], math.floor(take * sizes[i] / room))
        left -= sum(out[i] for i in group)
    return out


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
    round_: int, cfg: CompressConfig, shrink: float = 1.0,
) -> list[np.ndarray | None]:
    """Kept indices per piece (None = keep all, sent dense) under ``cfg.topk_scope``.

    ``per_tensor`` keeps each piece's budget inside the piece. ``per_segment`` pools every
    piece's budget and keeps the segment's largest entries, wherever they are; ``per_kind`` does
    the same within A pieces and within B (and other) pieces, so the rho_a/rho_b split holds
    while budget still moves between tensors (layers) whose updates differ in size (spec §5.1).
    """
    budgets = piece_budgets(values, pieces, layout, round_, cfg, shrink)
    if cfg.topk_scope == "per_tensor" or len(pieces) < 2:
        return [
            None if k >= p.size else topk_indices(np.asarray(v), k)
            for v, p, k in zip(values, pieces, budgets, strict=True)
        ]
    if cfg.topk_scope == "per_segment":
        groups = [list(range(len(pieces)))]
    else:
        is_a = [layout.tensors[p.tensor].kind == "A" for p in pieces]
        groups = [[j for j, a in enumerate(is_a) if a], [j for j, a in enumerate(is_a) if not a]]
    out: list[np.ndarray | None] = [None] * len(pieces)
    for group in filter(None, groups):
        bounds = np.cumsum([0] + [pieces[j].size for j in group])
        k = sum(budgets[j] for j in group)
        if k >= bounds[-1]:  # dense (FedIT, or a budget that covers the group): no top-k
            continue
        flat = np.concatenate([np.asarray(values[j]) for j in group])
        chosen = topk_indices(flat, k)  # ascending, so each piece's share is one slice
        cuts = np.searchsorted(chosen, bounds)
        for g, j in enumerate(group):
            sel = chosen[cuts[g]:cuts[g + 1]] - bounds[g]
            out[j] = None if sel.size == pieces[j].size else sel
    return out
