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

Decoding trusts nothing: stream lengths, code counts, padding bits (must be zero, so every
accepted stream is the one the encoder writes) and the last index are checked before the
indices are built, and the arithmetic cannot overflow int64 for any n < 2**32. Work and memory
are O(len(unary) + k*b/8 + k); temporaries are 1 byte per unary bit, <= 32 bytes per index.

Format v2 (``encode_sections``/``decode_sections``) generalises Rice to Golomb codes with any
parameter M >= 1 (remainders in truncated binary: c-1 bits below u = 2^c - M, else c bits,
c = ceil(log2 M)), chosen per tensor by exact bit count over a grid around the
Gallager-Van Voorhis value (spec §6). Measured on top-k masks of LoRA deltas this is 1.5-4%
smaller than the best Rice code (their gaps are not geometric; see docs/codec.md). The unary
parts of all tensors share one stream, the remainder parts another, both bit-granular with one
byte of padding per payload instead of two per tensor.
"""

from __future__ import annotations

import math

import numpy as np

from ecolora.compress import bitpack
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
    return int((gaps >> b).sum()) + gaps.size * (1 + b)


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


def _field_width(b: int) -> int:
    """Bytes of the smallest big-endian unsigned integer that holds a b-bit remainder."""
    return 1 if b <= 8 else 2 if b <= 16 else 4


def encode_positions(indices: np.ndarray, b: int) -> tuple[bytes, bytes]:
    """Sorted unique indices -> (unary stream, remainder stream)."""
    if not 0 <= b <= MAX_RICE:
        raise ValueError(f"Rice parameter {b} outside [0, {MAX_RICE}]")
    gaps = gaps_of(indices)
    if not gaps.size:
        return b"", b""
    if gaps.min() < 0:
        raise ValueError("indices must be sorted and unique")
    ends = np.cumsum((gaps >> b) + 1) - 1  # bit position of each terminating one
    unary = np.zeros(int(ends[-1]) + 1, dtype=bool)
    unary[ends] = True
    if not b:
        return np.packbits(unary).tobytes(), b""
    # each remainder as a big-endian integer of w bytes; keep the low b of its 8w bits
    w = _field_width(b)
    fields = gaps.astype(f">u{w}")  # wraps to the low 8w bits, exactly the bits we keep
    bits = np.unpackbits(fields.view(np.uint8)).reshape(gaps.size, 8 * w)[:, 8 * w - b :]
    return np.packbits(unary).tobytes(), np.packbits(bits).tobytes()


def remainder_nbytes(k: int, b: int) -> int:
    return (k * b + 7) // 8


def decode_positions(
    unary: bytes | memoryview, rem: bytes | memoryview, n: int, k: int, b: int, offset: int = 0
) -> np.ndarray:
    """Inverse of ``encode_positions``; validates every count against n and k.

    ``offset`` only locates errors in the enclosing payload. Cost is O(len(unary) + k*b).
    Only ``CorruptPayloadError`` is raised, for any input.
    """
    if not 0 <= k <= n:
        raise CorruptPayloadError("k", offset, f"k={k} outside [0, n={n}]")
    if not 0 <= b <= MAX_RICE:
        raise CorruptPayloadError("rice_b", offset, f"parameter {b} outside [0, {MAX_RICE}]")
    if len(rem) != remainder_nbytes(k, b):
        raise CorruptPayloadError("remainders", offset, f"{len(rem)} bytes for k={k}, b={b}")
    if k == 0:
        if len(unary) or b:
            raise CorruptPayloadError("positions", offset, "positions present for k=0")
        return np.zeros(0, dtype=np.int64)
    if len(unary) > (n + 7) // 8:
        raise CorruptPayloadError("unary", offset, f"{len(unary)} bytes > bound for n={n}")
    bits = np.unpackbits(np.frombuffer(unary, dtype=np.uint8)).view(bool)
    if np.count_nonzero(bits) != k:
        raise CorruptPayloadError("unary", offset, f"{np.count_nonzero(bits)} codes for k={k}")
    ends = np.flatnonzero(bits)
    if len(unary) != int(ends[-1]) // 8 + 1:
        raise CorruptPayloadError("unary", offset, "stream length does not match its codes")
    gaps = gaps_of(ends)  # the quotients; their sum is < 8*len(unary) <= n+7
    if b:
        rbits = np.unpackbits(np.frombuffer(rem, dtype=np.uint8))
        if rbits[k * b :].any():
            raise CorruptPayloadError("remainders", offset, "nonzero padding bits")
        w = _field_width(b)
        fields = np.zeros((k, 8 * w), dtype=np.uint8)
        fields[:, 8 * w - b :] = rbits[: k * b].reshape(k, b)
        r = np.packbits(fields).view(f">u{w}")
        # last index = sum(q << b) + sum(r) + k - 1, checked in Python ints before any cumsum
        last = (int(gaps.sum()) << b) + int(r.sum(dtype=np.int64)) + k - 1
        if last >= n:
            raise CorruptPayloadError("positions", offset, f"index {last} >= n={n}")
        gaps <<= b
        gaps |= r
    idx = np.cumsum(gaps + 1) - 1
    if idx[-1] >= n:
        raise CorruptPayloadError("positions", offset, f"index {int(idx[-1])} >= n={n}")
    return idx


# ---- format v2: Golomb codes with any parameter, all tensors in two shared streams ----------

MAX_M = (1 << 32) - 1


def golomb_reference(n: int, k: int) -> int:
    """Integer Gallager-Van Voorhis estimate: ln 2 * (mean gap + 1/2), rounded down (spec §6).

    Integer arithmetic only: the v2 record header sends M as a difference to this value (one
    byte instead of two or three), so both ends must compute it identically on any platform.
    """
    if k <= 0 or k >= n:
        return 1
    return max(1, ((n - k) * 2839 + k * 1420) // (4096 * k))  # 2839 / 4096 ~ ln 2


def golomb_code(m: int) -> tuple[int, int]:
    """(c, u) of the truncated-binary remainder: r < u takes c - 1 bits, the others c bits."""
    c = (m - 1).bit_length()
    return c, (1 << c) - m


class _GapStats:
    """What exact Golomb costs need from one tensor's gaps, computed once per search.

    Two exact formulas, whichever touches fewer numbers per candidate M: a weighted sum over
    the distinct gap values (O(distinct)), or, with H(x) = #{gaps >= x}, the identities
    sum(g // M) = sum_j H(jM) (j >= 1) and #{g mod M >= u} = sum_j H(jM + u) - H(jM + M)
    (j >= 0), which cost O(max gap / M) per candidate: ~10 numbers on top-k masks.
    """

    def __init__(self, gaps: np.ndarray) -> None:
        self.k = gaps.size
        self.top = int(gaps.max()) if gaps.size else 0
        self.tail = None
        if self.top < 2 * self.k + 1024:  # histogram no bigger than the gaps (plus a constant)
            counts = np.bincount(gaps, minlength=self.top + 1)
            self.tail = np.append(np.cumsum(counts[::-1])[::-1], 0)  # H(x), x = 0..top+1
            self.values = np.flatnonzero(counts).astype(np.float64)
            self.weights = counts[self.values.astype(np.int64)].astype(np.float64)
        else:
            self.values = gaps.astype(np.float64)
            self.weights = np.ones(gaps.size, dtype=np.float64)

    def costs(self, ms: np.ndarray) -> np.ndarray:
        """Exact bits of the gaps for each M in ``ms`` (int64 array, each >= 1)."""
        c = np.frexp(ms - 1.0)[1].astype(np.int64)  # bit_length(M - 1) = ceil(log2 M)
        u = (np.int64(1) << c) - ms
        spans = self.top // int(ms.min()) + 1
        if self.tail is not None and spans < self.values.size:
            jm = ms[:, None] * np.arange(spans, dtype=np.int64)[None, :]
            h = self.tail
            end = h[np.minimum(jm + ms[:, None], self.top + 1)]
            return self.k * c + end.sum(axis=1) + (h[np.minimum(jm + u[:, None], self.top + 1)]
                                                   - end).sum(axis=1)
        # float64 is exact: gaps and M are below 2**32, so floor(g / M) cannot round wrongly
        total = np.zeros(ms.size)
        fm = ms.astype(np.float64)
        for lo in range(0, self.values.size, 4096):  # bounded temporaries
            v, w = self.values[lo : lo + 4096], self.weights[lo : lo + 4096]
            q = np.floor(v[None, :] / fm[:, None])
            r = v[None, :] - q * fm[:, None]
            total += q @ w + (r >= u[:, None]) @ w
        return np.rint(total).astype(np.int64) + self.k * c


def golomb_costs(gaps: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """Exact Golomb code lengths of ``gaps`` (bits) for each parameter in ``ms``."""
    return _GapStats(np.asarray(gaps, dtype=np.int64)).costs(np.asarray(ms, dtype=np.int64))


def search_golomb(n: int, gaps: np.ndarray) -> int:
    """The M with the fewest bits, by exact evaluation (spec §6: "Kiely optimum plus an exact
    search over the neighbouring parameters", generalised from 2^b to every integer M).

    Small problems try every M in [1, n]. Otherwise two vectorized rounds: a geometric grid
    (2^(1/16) steps from 0.35 to 1.5 times the Gallager-Van Voorhis value of the mean gap, which
    bracketed the optimum on every mask in docs/codec.md), then up to 33 integers between the
    best grid point's neighbours. Against trying every M this lost at most 0.11% of the
    position bits on those masks. The grid also holds the Rice values v1 tried (Kiely's b
    +-2), so the result is never worse than v1's. Ties go to the smaller M (deterministic).
    """
    hi = max(1, min(n, MAX_M))
    if not gaps.size:
        return 1
    stats = _GapStats(gaps)
    if stats.values.size * hi <= 1 << 14:
        ms = np.arange(1, hi + 1, dtype=np.int64)
        return int(ms[np.argmin(stats.costs(ms))])
    p = 1.0 / (float(gaps.mean()) + 1.0)
    center = math.log(2.0 - p) / -math.log1p(-p) if p < 1 else 1.0
    grid = np.rint(center * 2.0 ** (np.arange(-24, 10) / 16))
    b = kiely_parameter(n, gaps.size)  # v1's candidates too: never worse than v1's Rice choice
    rice = 2.0 ** np.arange(max(0, b - 2), min(MAX_RICE, b + 2) + 1)
    cands = np.unique(np.clip(np.concatenate([grid, rice]), 1, hi)).astype(np.int64)
    best = int(np.argmin(stats.costs(cands)))
    lo, top = int(cands[max(best - 1, 0)]), int(cands[min(best + 1, cands.size - 1)])
    if top - lo < 2:
        return int(cands[best])
    fine = np.unique(np.append(np.rint(np.linspace(lo, top, min(top - lo + 1, 33))),
                               cands[best])).astype(np.int64)
    return int(fine[np.argmin(stats.costs(fine))])


def choose_golomb(n: int, indices: np.ndarray, rule: str) -> int:
    """Golomb parameter M for one tensor under ``rule`` (the Rice rules give M = 2^b)."""
    k = len(indices)
    if rule in ("rice_kiely_floor", "rice_ceil"):
        return min(1 << kiely_parameter(n, k, ceil=rule == "rice_ceil"), max(1, n))
    if rule == "empirical_best":
        return search_golomb(n, gaps_of(indices)) if k else 1
    raise ValueError(f"unknown Rice parameter rule {rule!r}")


def golomb_split(gaps: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(quotients, remainder bits) of Golomb(M) codes: k fields of c - 1 bits, then one extra
    bit per field >= u, in order. A prefix code split in two so both halves vectorize."""
    if m & (m - 1) == 0:
        q = gaps >> (m.bit_length() - 1)
    else:
        q = gaps // m
    c, u = golomb_code(m)
    if c == 0:
        return q, np.zeros(0, dtype=bool)
    r = gaps - q * m
    long = r >= u
    v = np.where(long, (r + u) >> 1, r)
    extra = ((r[long] + u) & 1).astype(bool)
    return q, np.concatenate([bitpack.fields_to_bits(v, c - 1), extra])


def encode_sections(groups: list[tuple[np.ndarray, int]]) -> tuple[bytes, bytes]:
    """(unary stream, remainder stream) for the sorted index arrays with their parameters.

    Each stream holds every group back to back and is padded with zero bits once, at its end.
    """
    quotients, rbits = [], []
    for idx, m in groups:
        q, bits = golomb_split(gaps_of(idx), m)
        quotients.append(q)
        rbits.append(bits)
    if not quotients:
        return b"", b""
    q = np.concatenate(quotients)
    if not q.size:
        return b"", np.packbits(np.concatenate(rbits)).tobytes()
    if q.min() < 0:
        raise ValueError("indices must be sorted and unique")
    ends = np.cumsum(q + 1) - 1
    unary = np.zeros(int(ends[-1]) + 1, dtype=bool)
    unary[ends] = True
    return np.packbits(unary).tobytes(), np.packbits(np.concatenate(rbits)).tobytes()


def decode_sections(
    unary: bytes | memoryview, rem: bytes | memoryview, groups: list[tuple[int, int, int]],
    offset: int = 0,
) -> list[np.ndarray]:
    """Inverse of ``encode_sections`` for groups of (n, k, M); every count is validated.

    The caller has checked 0 <= k <= n and 1 <= M <= max(1, n). The unary stream must hold
    exactly sum(k) codes and end in the byte of its last one; the remainder stream must be
    consumed exactly, padding bits zero. Last indices are checked in Python integers before
    any int64 arithmetic that could overflow. O(len(unary) + len(rem) + sum(k)) work.
    """
    total = sum(k for _, k, _ in groups)
    if total > 8 * len(unary):
        raise CorruptPayloadError("unary", offset, f"{len(unary)} bytes cannot hold {total} codes")
    ubits = np.unpackbits(np.frombuffer(unary, dtype=np.uint8)).view(bool)
    ends = np.flatnonzero(ubits)
    if ends.size != total:
        raise CorruptPayloadError("unary", offset, f"{ends.size} codes for k={total}")
    if total and len(unary) != int(ends[-1]) // 8 + 1 or not total and len(unary):
        raise CorruptPayloadError("unary", offset, "stream length does not match its codes")
    quotients = gaps_of(ends)
    rbits = np.unpackbits(np.frombuffer(rem, dtype=np.uint8)).view(bool)
    out, at, pos = [], 0, 0
    for n, k, m in groups:
        q = quotients[at : at + k]
        at += k
        c, u = golomb_code(m)
        width = max(c - 1, 0)
        if k * width > rbits.size - pos:
            raise CorruptPayloadError("remainders", offset, "remainder stream too short")
        r = bitpack.bits_to_fields(rbits[pos : pos + k * width], k, width)
        pos += k * width
        if c:
            long = r >= u
            nlong = int(np.count_nonzero(long))
            if nlong > rbits.size - pos:
                raise CorruptPayloadError("remainders", offset, "remainder stream too short")
            r[long] = 2 * r[long] + rbits[pos : pos + nlong] - u
            pos += nlong
        if k:
            last = int(q.sum()) * m + int(r.sum()) + k - 1  # Python ints: no overflow
            if last >= n:
                raise CorruptPayloadError("positions", offset, f"index {last} >= n={n}")
        out.append(np.cumsum(q * m + r + 1) - 1)
    if len(rem) != (pos + 7) // 8 or rbits[pos:].any():
        raise CorruptPayloadError("remainders", offset, "length or padding does not match")
    return out
