"""Golomb-Rice coding of sparse positions (spec §6), vectorized with numpy.

Kept indices are turned into gaps (zeros skipped before each kept entry, the first gap counted
from 0). Gap g is split into a quotient ``g >> b`` sent in unary and a remainder of ``b`` bits.
We store the two parts as two streams, the unary stream (q zeros then a one, per index) and the
fixed-width remainder stream. The bit count is exactly that of interleaved Rice codes (plus at
most one byte of padding per stream), but both directions vectorize: decoding the unary stream
is ``flatnonzero``, the remainders a reshape. No Python loop runs per element.

Parameter rules (spec §6): ``rice_kiely_floor`` is Kiely's optimum for geometric gaps,
``rice_ceil`` the STC reimplementation's variant, and ``empirical_best`` evaluates the exact
bit count of the real gaps for the Kiely value and its neighbours and keeps the smallest.
"""

from __future__ import annotations

import math

import numpy as np

from ecolora.errors import CorruptPayloadError

_GOLDEN = (1 + math.sqrt(5)) / 2
MAX_RICE = 31


def kiely_parameter(n: int, k: int, ceil: bool = False) -> int:
    """Rice parameter b* = 1 + floor(log2(ln(phi-1) / ln(1-p))), p = k/n (Kiely 2004 eq. 8)."""
    if k <= 0 or k >= n:
        return 0
    p = k / n
    x = math.log2(math.log(_GOLDEN - 1) / math.log1p(-p))
    b = 1 + (math.ceil(x) if ceil else math.floor(x))
    return int(min(max(b, 0), MAX_RICE))


def gaps_of(indices: np.ndarray) -> np.ndarray:
    """Sorted unique indices -> gaps (zeros skipped before each kept entry)."""
    idx = np.asarray(indices, dtype=np.int64)
    gaps = np.empty_like(idx)
    if idx.size:
        gaps[0] = idx[0]
        np.subtract(idx[1:], idx[:-1] + 1, out=gaps[1:])
    return gaps


def coded_bits(gaps: np.ndarray, b: int) -> int:
    """Exact bits of Rice(b) codes for ``gaps``: sum of (g >> b) + 1 + b."""
    return int(np.sum(gaps >> b)) + gaps.size * (1 + b)


def choose_parameter(n: int, indices: np.ndarray, rule: str) -> int:
    k = len(indices)
    if rule == "rice_kiely_floor":
        return kiely_parameter(n, k)
    if rule == "rice_ceil":
        return kiely_parameter(n, k, ceil=True)
    if rule == "empirical_best":
        gaps = gaps_of(indices)
        start = kiely_parameter(n, k)
        candidates = range(max(0, start - 2), min(MAX_RICE, start + 2) + 1)
        return min(candidates, key=lambda b: (coded_bits(gaps, b), b))
    raise ValueError(f"unknown Rice parameter rule {rule!r}")


def encode_positions(indices: np.ndarray, b: int) -> tuple[bytes, bytes]:
    """Sorted unique indices -> (unary stream, remainder stream)."""
    gaps = gaps_of(indices)
    q = gaps >> b
    ends = np.cumsum(q + 1) - 1  # bit position of each terminating one
    unary = np.zeros(int(ends[-1]) + 1 if gaps.size else 0, dtype=np.uint8)
    unary[ends] = 1
    if b:
        shifts = np.arange(b - 1, -1, -1, dtype=np.int64)
        rem_bits = ((gaps[:, None] >> shifts) & 1).astype(np.uint8).ravel()
    else:
        rem_bits = np.zeros(0, dtype=np.uint8)
    return np.packbits(unary).tobytes(), np.packbits(rem_bits).tobytes()


def remainder_nbytes(k: int, b: int) -> int:
    return (k * b + 7) // 8


def decode_positions(
    unary: bytes | memoryview, rem: bytes | memoryview, n: int, k: int, b: int, offset: int = 0
) -> np.ndarray:
    """Inverse of ``encode_positions``; validates every count against n and k.

    ``offset`` only locates errors in the enclosing payload. Cost is O(len(unary) + k*b).
    """
    if k == 0:
        if len(unary) or len(rem):
            raise CorruptPayloadError("positions", offset, "bytes present for k=0")
        return np.zeros(0, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(unary, dtype=np.uint8))
    ends = np.flatnonzero(bits)
    if ends.size != k:
        raise CorruptPayloadError("unary", offset, f"{ends.size} codes for k={k}")
    if len(unary) != int(ends[-1]) // 8 + 1:
        raise CorruptPayloadError("unary", offset, "stream length does not match its codes")
    q = np.diff(ends, prepend=-1) - 1
    gaps = q << b
    if b:
        rbits = np.unpackbits(np.frombuffer(rem, dtype=np.uint8))[: k * b]
        weights = (1 << np.arange(b - 1, -1, -1, dtype=np.int64))
        gaps |= rbits.reshape(k, b).astype(np.int64) @ weights
    idx = np.cumsum(gaps + 1) - 1
    if idx[-1] >= n:
        raise CorruptPayloadError("positions", offset, f"index {int(idx[-1])} >= n={n}")
    return idx
