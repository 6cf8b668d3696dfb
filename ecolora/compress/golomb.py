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
indices are built, and the arithmetic cannot overflow int64 for any n < 2**32. Work is
O(len(unary) + k*b/8 + k); memory is the k int64 indices plus temporaries of bounded size.

Format v2 (``encode_sections``/``decode_sections``) generalises Rice to Golomb codes with any
parameter M >= 1 (remainders in truncated binary: c-1 bits below u = 2^c - M, else c bits,
c = ceil(log2 M)), chosen per tensor by exact bit count (``golomb_search``, spec §6). On
top-k masks of LoRA deltas this is 1-4% smaller than the best Rice code (their gaps are not
geometric; docs/codec.md). The unary parts of all tensors share one stream, the remainder
parts another, both bit-granular with one byte of padding per payload instead of two per
tensor.
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
    """Integer Gallager-Van Voorhis estimate, defined by this exact integer formula (spec §6,
    docs/wire.md §golomb_m): max(1, ((n-k)*2839 + k*1420) // (4096*k)) for 0 < k < n, else 1.
    It approximates ln 2 * (mean gap + 1/2) but is not that rounded down (n=139, k=1: 95, not 96).

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


def gaps_of_many(indices: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(all gaps concatenated, k per array) for sorted unique index arrays, in one pass."""
    ks = np.array([len(i) for i in indices], dtype=np.int64)
    if not ks.sum():
        return np.zeros(0, dtype=np.int64), ks
    idx = np.concatenate([np.asarray(i, dtype=np.int64) for i in indices])
    gaps = np.empty_like(idx)
    np.subtract(idx[1:], idx[:-1] + 1, out=gaps[1:])
    starts = (np.cumsum(ks) - ks)[ks > 0]
    gaps[starts] = idx[starts]
    if gaps.min() < 0:
        raise ValueError("indices must be sorted and unique")
    return gaps, ks


def encode_sections(gaps: np.ndarray, ks: np.ndarray, ms: list[int]) -> tuple[bytes, bytes]:
    """(unary stream, remainder stream) for concatenated gaps (``ks`` per group) and each
    group's parameter M. Each stream holds every group back to back and is padded with zero
    bits once, at its end."""
    if gaps.size and gaps.min() < 0:
        raise ValueError("indices must be sorted and unique")
    quotients, rbits, at = [], [], 0
    for k, m in zip(ks.tolist(), ms, strict=True):
        q, bits = golomb_split(gaps[at : at + k], m)
        at += k
        quotients.append(q)
        rbits.append(bits)
    rem = np.packbits(np.concatenate(rbits)).tobytes() if rbits else b""
    if not gaps.size:
        return b"", rem
    ends = np.cumsum(np.concatenate(quotients) + 1) - 1
    unary = np.zeros(int(ends[-1]) + 1, dtype=bool)
    unary[ends] = True
    return np.packbits(unary).tobytes(), rem


STEP_BYTES = 1 << 15  # unary bytes unpacked at a time (at most 8x as many codes)
CHUNK = 1 << 18  # codes whose remainders are decoded at a time


def decode_sections(
    unary: bytes | memoryview, rem: bytes | memoryview, groups: list[tuple[int, int, int]],
    offset: int = 0,
) -> list[np.ndarray]:
    """Inverse of ``encode_sections`` for groups of (n, k, M); every count is validated.

    The caller has checked 0 <= k <= n and 1 <= M <= max(1, n). The unary stream must hold
    exactly sum(k) codes and end in the byte of its last one; the remainder stream must be
    consumed exactly, padding bits zero. A quotient that alone reaches n is refused before any
    int64 product could overflow. O(len(unary) + len(rem) + sum(k)) work.

    Memory (issue 13, D1): one int64 array of sum(k) entries, which becomes the indices (each
    group's array is a view of it), plus temporaries bounded by ``STEP_BYTES`` and ``CHUNK``:
    both streams are unpacked a slice at a time, never whole.
    """
    total = sum(k for _, k, _ in groups)
    if total > 8 * len(unary):
        raise CorruptPayloadError("unary", offset, f"{len(unary)} bytes cannot hold {total} codes")
    quotients = _quotients(np.frombuffer(unary, dtype=np.uint8), total, offset)
    rbytes = np.frombuffer(rem, dtype=np.uint8)
    nbits = 8 * rbytes.size
    out, at, pos = [], 0, 0
    for n, k, m in groups:
        q = quotients[at : at + k]
        at += k
        c, u = golomb_code(m)
        width = max(c - 1, 0)
        if k * width > nbits - pos:
            raise CorruptPayloadError("remainders", offset, "remainder stream too short")
        if k and int(q.max()) * m >= n:  # Python ints: no overflow
            raise CorruptPayloadError("positions", offset, f"an index >= n={n}")
        extra, nlong, carry = pos + k * width, 0, 0
        for s in range(0, k, CHUNK):
            e = min(k, s + CHUNK)
            r = bitpack.bits_to_fields(_bits(rbytes, pos + s * width, (e - s) * width),
                                       e - s, width)
            if c:
                long = r >= u
                nl = int(np.count_nonzero(long))
                if nl > nbits - extra - nlong:
                    raise CorruptPayloadError("remainders", offset, "remainder stream too short")
                r[long] = 2 * r[long] + _bits(rbytes, extra + nlong, nl) - u
                nlong += nl
            part = q[s:e]  # becomes the indices in place: gap + 1, running sum, minus 1
            part *= m
            part += r
            part += 1
            np.cumsum(part, out=part)
            part += carry
            carry = int(part[-1])
            part -= 1
        if carry > n:
            raise CorruptPayloadError("positions", offset, f"index {carry - 1} >= n={n}")
        pos = extra + nlong
        out.append(q)
    if rbytes.size != (pos + 7) // 8 or _bits(rbytes, pos, nbits - pos).any():
        raise CorruptPayloadError("remainders", offset, "length or padding does not match")
    return out


def _quotients(ubytes: np.ndarray, total: int, offset: int) -> np.ndarray:
    """The quotient (zeros before its one-bit) of every code of the unary stream."""
    q = np.empty(total, dtype=np.int64)
    got, prev = 0, -1
    for b0 in range(0, ubytes.size, STEP_BYTES):
        ends = np.flatnonzero(np.unpackbits(ubytes[b0 : b0 + STEP_BYTES]))
        if got + ends.size > total:
            raise CorruptPayloadError("unary", offset, f"more than k={total} codes")
        if ends.size:
            ends += 8 * b0
            part = q[got : got + ends.size]
            part[0] = ends[0] - prev - 1
            np.subtract(ends[1:], ends[:-1] + 1, out=part[1:])
            prev = int(ends[-1])
            got += ends.size
    if got != total:
        raise CorruptPayloadError("unary", offset, f"{got} codes for k={total}")
    if total and ubytes.size != prev // 8 + 1 or not total and ubytes.size:
        raise CorruptPayloadError("unary", offset, "stream length does not match its codes")
    return q


def _bits(packed: np.ndarray, start: int, count: int) -> np.ndarray:
    """Bits [start, start + count) of an MSB-first packed byte array, as bool."""
    lo = start >> 3
    head = start - 8 * lo
    return np.unpackbits(packed[lo : (start + count + 7) >> 3]).view(bool)[head : head + count]
