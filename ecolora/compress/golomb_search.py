"""Choosing each tensor's Golomb parameter M for format v2: exact bit counts, all tensors at once.

Spec §6 asks for "the Kiely optimum plus an exact search over the few neighbouring parameters
using the real gaps". v2 allows every integer M >= 1, not only powers of two, so the search is
over a grid: per tensor 34 points at 2^(1/16) steps from 0.35 to 1.5 times the
Gallager-Van Voorhis value of its mean gap, plus v1's Rice candidates (Kiely's b +-2, so the
result is never worse than v1's), then 34 integers between the best point's neighbours.
Against trying every M this lost at most 0.26% of the position bits on the masks of
docs/codec.md; the grid bracketed the optimum on all of them.

Why batched: a payload has one record per LoRA tensor (152 in the benchmark's 10M update,
hundreds in a 7B model), and a per-tensor numpy search costs ~0.2 ms of call overhead, which
alone was half the encode time. Here each round is a fixed number of numpy calls over all
(tensor, candidate) pairs, whatever the number of tensors.

Exact cost of gaps g with parameter M, c = ceil(log2 M), u = 2^c - M (truncated binary):
per gap c + floor((g - u) / M) + 1 bits; summed, with H(x) = #{gaps >= x},
k*c + sum_{t >= 0} H(t*M + u). The second form costs max_gap / M terms instead of k, and is
used where it is the cheaper one and the tensor's histogram small (max gap < 64k + 4096).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecolora.compress.golomb import MAX_M, MAX_RICE, gaps_of, kiely_parameter

_GRID = 2.0 ** (np.arange(-12, 5) / 8)
_FINE = 16  # intervals between the best grid point's neighbours
_RICE = (-2, -1, 0, 1, 2)  # Kiely's b and its neighbours: what v1 tried


def _runs(first: np.ndarray, step: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Concatenated arithmetic runs first_p + step_p * t, t = 0..count_p - 1 (counts >= 1),
    built with one repeat and one cumsum instead of per-element index arithmetic."""
    inc = np.repeat(step, count)
    starts = np.cumsum(count) - count
    last = first + step * (count - 1)
    inc[starts] = first - np.concatenate([[0], last[:-1]])
    return np.cumsum(inc)


class _Gaps:
    """The gaps of many tensors, concatenated, with what the cost formulas need."""

    def __init__(self, gaps: np.ndarray, ks: np.ndarray) -> None:
        self.k = np.asarray(ks, dtype=np.int64)
        self.start = np.cumsum(self.k) - self.k
        self.gaps = np.asarray(gaps, dtype=np.int64)
        live = self.k > 0
        self.top = np.zeros(self.k.size, dtype=np.int64)
        self.sum = np.zeros(self.k.size, dtype=np.int64)
        if live.any():
            self.top[live] = np.maximum.reduceat(self.gaps, self.start[live])
            self.sum[live] = np.add.reduceat(self.gaps, self.start[live])
        # histograms H(x) = #{gaps >= x}, x = 0..top+1, for tensors where they are small
        self.hist = live & (self.top < 64 * self.k + 4096)
        size = np.where(self.hist, self.top + 2, 0)
        self.base = np.cumsum(size) - size
        rec = np.repeat(np.arange(self.k.size), self.k)
        sel = self.hist[rec]
        counts = np.bincount(self.base[rec[sel]] + self.gaps[sel], minlength=int(size.sum()))
        self.tail = np.cumsum(counts[::-1])[::-1]  # per tensor: H(x) + (later tensors' total)

    def costs(self, rec: np.ndarray, ms: np.ndarray) -> np.ndarray:
        """Exact bits for each (tensor, M) pair."""
        c = np.frexp((ms - 1).astype(np.float64))[1].astype(np.int64)  # bit_length(M - 1)
        u = (np.int64(1) << c) - ms
        k, top = self.k[rec], self.top[rec]
        spans = np.where(u <= top, (top - u) // ms + 1, 0)
        per_tensor = np.bincount(rec, weights=spans, minlength=self.k.size)
        use_tail = self.hist & (per_tensor < np.bincount(rec, minlength=self.k.size) * self.k)
        tail = use_tail[rec]
        out = k * c
        p = np.flatnonzero(tail & (spans > 0))
        if p.size:  # + sum_t H(t*M + u); H(x) = tail[base + x] - tail[base + top + 1]
            r = rec[p]
            x = _runs(self.base[r] + u[p], ms[p], spans[p])
            h = np.add.reduceat(self.tail[x], np.cumsum(spans[p]) - spans[p])
            out[p] += h - spans[p] * self.tail[self.base[r] + self.top[r] + 1]
        p = np.flatnonzero(~tail & (k > 0))
        if p.size:  # per gap: c + floor((g - u) / M) + 1
            g = self.gaps[_runs(self.start[rec[p]], np.ones(p.size, np.int64), k[p])]
            # float64 is exact here (|g - u| < 2**33) and divides much faster than int64
            terms = np.floor((g - np.repeat(u[p], k[p])) / np.repeat(ms[p], k[p]).astype(float))
            out[p] += k[p] + np.add.reduceat(terms, np.cumsum(k[p]) - k[p]).astype(np.int64)
        return out


def golomb_costs(gaps: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """Exact Golomb code lengths of one tensor's ``gaps`` (bits) for each M in ``ms``."""
    ms = np.asarray(ms, dtype=np.int64)
    gaps = np.asarray(gaps, np.int64)
    return _Gaps(gaps, np.array([gaps.size])).costs(np.zeros(ms.size, np.int64), ms)


def _best(stats: _Gaps, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of sorted candidates (one row per tensor): index and value of the cheapest."""
    rows = np.repeat(np.arange(cands.shape[0]), cands.shape[1])
    cost = stats.costs(rows, cands.ravel()).reshape(cands.shape)
    j = np.argmin(cost, axis=1)  # first minimum: the smaller M among equal costs
    return j, cands[np.arange(cands.shape[0]), j]


def search_golomb_many(ns: Sequence[int], gaps: np.ndarray, ks: np.ndarray) -> list[int]:
    """The cheapest M (see the module docstring) for each tensor's gaps (concatenated,
    ``ks[i]`` of them for tensor i); 1 where k = 0."""
    ks = np.asarray(ks, dtype=np.int64)
    out = np.ones(ks.size, dtype=np.int64)
    live = np.flatnonzero(ks)
    if not live.size:
        return out.tolist()
    stats = _Gaps(gaps, ks[live])
    ns_live = [ns[i] for i in live.tolist()]
    hi = np.array([max(1, min(n, MAX_M)) for n in ns_live], dtype=np.int64)
    p = stats.k / (stats.sum + stats.k)  # 1 / (mean gap + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        center = np.where(p < 1, np.log(2.0 - p) / -np.log1p(-p), 1.0)
    kiely = [kiely_parameter(n, k) for n, k in zip(ns_live, stats.k.tolist(), strict=True)]
    rice = np.array([[2.0 ** min(max(b + d, 0), MAX_RICE) for d in _RICE] for b in kiely])
    cands = np.concatenate([np.rint(center[:, None] * _GRID[None, :]), rice], axis=1)
    cands = np.sort(np.clip(cands, 1, hi[:, None]), axis=1).astype(np.int64)
    j, best = _best(stats, cands)
    rows = np.arange(cands.shape[0])
    lo = cands[rows, np.maximum(j - 1, 0)]
    top = cands[rows, np.minimum(j + 1, cands.shape[1] - 1)]
    steps = np.arange(_FINE + 1) / _FINE
    fine = np.rint(lo[:, None] + (top - lo)[:, None] * steps[None, :]).astype(np.int64)
    fine = np.sort(np.concatenate([fine, best[:, None]], axis=1), axis=1)
    _, out[live] = _best(stats, fine)
    return out.tolist()


def search_golomb(n: int, gaps: np.ndarray) -> int:
    gaps = np.asarray(gaps, np.int64)
    return search_golomb_many([n], gaps, np.array([gaps.size]))[0]


def choose_golombs(ns: Sequence[int], gaps: np.ndarray, ks: np.ndarray, rule: str) -> list[int]:
    """Golomb parameter M per tensor under ``rule`` (the Rice rules give M = 2^b, capped at
    n); ``gaps`` are all tensors' gaps concatenated, ``ks[i]`` of them for tensor i."""
    if rule in ("rice_kiely_floor", "rice_ceil"):
        return [min(1 << kiely_parameter(n, k, ceil=rule == "rice_ceil"), max(1, n))
                for n, k in zip(ns, np.asarray(ks).tolist(), strict=True)]
    if rule == "empirical_best":
        return search_golomb_many(ns, gaps, ks)
    raise ValueError(f"unknown Rice parameter rule {rule!r}")


def choose_golomb(n: int, indices: np.ndarray, rule: str) -> int:
    gaps = gaps_of(indices)
    return choose_golombs([n], gaps, np.array([gaps.size]), rule)[0]
