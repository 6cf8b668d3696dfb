"""8- and 4-bit values with one fp32 scale per record: format v3's value section (issue 13).

Why: at 1% density a kept entry costs ~8 position bits and 16 value bits, so values are two
thirds of an upload. Symmetric linear quantization with a per-record scale (max|x| / qmax,
qmax = 127 or 7) sends 8 or 4 bits; the error goes into the client's residual like top-k's
(error feedback, spec §5.4), so it is delayed rather than lost (the QSGD/EF-SGD argument).
Codes -128 and -8 are never written (symmetric range), which keeps zero exact and the rule
simple to check.

Layout (docs/wire.md §quantized values): the fp32 scales of every record with k >= 1 in
record order, then the codes of all values in order: q8 one signed byte each, q4 two's
complement nibbles, high nibble first, the last byte padded with a zero nibble. A scale is
+0 (then every code of its record is 0) or a positive normal float32. The receiver's value is
the float32 product code * scale, which the sender reproduces bit for bit (``round_trip``).

Stochastic rounding (``quantize(..., rng=)``) is unbiased; the method draws it from a
generator seeded by round and client so runs stay reproducible, and the wire never sees the
randomness: it receives values that are exact multiples of the scale and the scale itself.
"""

from __future__ import annotations

import numpy as np

from ecolora.errors import CorruptPayloadError

QMAX = {"q8": 127, "q4": 7}
_MIN_NORMAL = np.float32(2.0**-126)


def scale_of(values: np.ndarray, dtype: str) -> np.float32:
    """max|x| / qmax in float32; 0 when that is not a positive normal number (all codes 0)."""
    x = np.asarray(values, np.float32)
    if not x.size:
        return np.float32(0)
    top = np.float32(np.max(np.abs(x)))
    s = np.float32(top / np.float32(QMAX[dtype]))
    return s if np.isfinite(s) and s >= _MIN_NORMAL else np.float32(0)


def codes_of(values: np.ndarray, scale: np.float32, dtype: str,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """int8 codes of ``values`` at ``scale``: nearest (ties to even) or stochastic rounding."""
    x = np.asarray(values, np.float32)
    if scale == 0 or not x.size:
        return np.zeros(x.size, np.int8)
    q = QMAX[dtype]
    with np.errstate(over="ignore", invalid="ignore"):
        y = x / scale
    y = np.where(np.isfinite(y), y, 0)  # non-finite inputs never reach here in a valid run
    if rng is None:
        c = np.rint(y)
    else:
        lo = np.floor(y)
        c = lo + (rng.random(y.size, dtype=np.float32) < (y - lo))
    return np.clip(c, -q, q).astype(np.int8)


def dequantize(codes: np.ndarray, scale: np.float32) -> np.ndarray:
    return codes.astype(np.float32) * np.float32(scale)


def round_trip(values: np.ndarray, dtype: str, rng: np.random.Generator | None = None
               ) -> tuple[np.ndarray, np.float32]:
    """(what the receiver decodes, the scale) for one record's values."""
    s = scale_of(values, dtype)
    return dequantize(codes_of(values, s, dtype, rng), s), s


def encode(records: list[tuple[np.ndarray, float | None]], dtype: str) -> bytes:
    """The v3 value section for (values, scale or None) per record, in record order. With a
    scale given (a decoded payload, or values already quantized by the sender), the codes are
    the values divided by it and rounded, which recovers the sent codes exactly."""
    scales, codes = [], []
    for vals, given in records:
        v = np.asarray(vals, np.float32).ravel()
        if not v.size:
            continue
        s = scale_of(v, dtype) if given is None else np.float32(given)
        scales.append(s)
        codes.append(codes_of(v, s, dtype))
    head = np.array(scales, "<f4").tobytes()
    flat = np.concatenate(codes) if codes else np.zeros(0, np.int8)
    if dtype == "q8":
        return head + flat.tobytes()
    nib = (flat.astype(np.uint8) & 0x0F)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return head + ((nib[0::2] << 4) | nib[1::2]).astype(np.uint8).tobytes()


def nbytes(ks: list[int], dtype: str) -> int:
    """Size of the value section for records of ``ks`` values."""
    total = sum(ks)
    codes = total if dtype == "q8" else (total + 1) // 2
    return 4 * sum(1 for k in ks if k) + codes


def decode(raw: bytes | memoryview, ks: list[int], dtype: str, at: int
           ) -> tuple[np.ndarray, list[float]]:
    """(all values as float32, the scales) from a value section of exactly ``nbytes(ks)``."""
    nscaled = sum(1 for k in ks if k)
    bits = np.frombuffer(raw[: 4 * nscaled], "<u4")
    if np.any((bits != 0) & ((bits < 0x00800000) | (bits >= 0x7F800000))):
        raise CorruptPayloadError("values", at, "a scale is not +0 or a positive normal float")
    scales = bits.view("<f4").astype(np.float32)
    body = np.frombuffer(raw[4 * nscaled :], np.uint8)
    total = sum(ks)
    if dtype == "q8":
        codes = body.view(np.int8)
    else:  # nibbles, high first, sign-extended in place (x ^ 8) - 8: no wider temporaries
        if body.size and 2 * body.size > total and body[-1] & 0x0F:
            raise CorruptPayloadError("values", at, "nonzero q4 padding nibble")
        codes = np.empty(total, np.int8)
        codes[0::2] = (body >> 4)[: (total + 1) // 2].view(np.int8)
        codes[1::2] = (body & 0x0F)[: total // 2].view(np.int8)
        np.bitwise_xor(codes, 8, out=codes)
        np.subtract(codes, 8, out=codes)
    q = QMAX[dtype]
    if codes.size and (codes.min() < -q or codes.max() > q):
        raise CorruptPayloadError("values", at, f"a code outside [-{q}, {q}]")
    out = codes.astype(np.float32)  # the result; each record is scaled in place
    pos = 0
    with np.errstate(over="ignore"):  # code * scale may overflow: inf, rejected as non-finite
        for k, scale in zip((k for k in ks if k), scales, strict=True):
            part = out[pos : pos + k]
            if scale == 0 and part.any():
                raise CorruptPayloadError("values", at, "nonzero code under a zero scale")
            part *= scale
            pos += k
    return out, [float(s) for s in scales]
