"""Kept values on the wire: 16-bit (fp16, bf16) or fp32, optionally with their exponent bytes
DEFLATE-compressed (format v2, spec §6: values are sent losslessly at the chosen precision).

Why the exponent bytes compress: top-k keeps the entries above a threshold, and in real LoRA
deltas the kept magnitudes span about one binade (Adam's steps are near lr in size), so the
byte plane holding sign and exponent takes a few distinct values, while the low mantissa bytes
are noise. Measured on top-k of real deltas (docs/codec.md): compressing only the planes that
hold the exponent (fp16: the high byte; bf16 and fp32: the high two) with DEFLATE level 1
saves 31-33% of fp16 value bytes, 38-49% of bf16 and 19-25% of fp32, at ~20 ms per 1M values;
compressing all planes saved less and took 2-3x longer, and zlib is in the standard library.
"""

from __future__ import annotations

import zlib

import numpy as np

from ecolora.errors import CorruptPayloadError

ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}
PACKED_PLANES = {"fp16": 1, "bf16": 2, "fp32": 2}  # the most significant planes: sign, exponent
FP16_MAX = 65504.0  # largest finite fp16
MAX_EXPANSION = 8  # DEFLATE planes may be at most this many times smaller than stored ones


def encode_values(values: np.ndarray, dtype: str) -> bytes:
    """float32 -> little-endian ``dtype`` bytes. NaN stays NaN and ±Inf stays ±Inf (the decoder
    then rejects the payload); a finite value beyond the dtype's range is clamped to its largest
    finite value, so that error feedback keeps the difference instead of the whole payload
    being rejected (issue 13, D2 and D3)."""
    x = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "fp32":
        return x.astype("<f4").tobytes()
    if dtype == "fp16":
        x = np.where(np.isfinite(x), np.clip(x, -FP16_MAX, FP16_MAX), x)
        return x.astype("<f2").tobytes()
    # bf16: round to nearest even on the upper 16 bits of the fp32 pattern
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32)
    sign = (u >> 16).astype(np.uint32) & 0x8000
    nan = np.isnan(x)
    r[nan] = (u[nan] >> 16).astype(np.uint32) | 0x0040  # quiet NaN: rounding could make it ±0/Inf
    over = np.isfinite(x) & ((r & 0x7FFF) == 0x7F80)
    r[over] = sign[over] | 0x7F7F  # the largest finite bf16
    return r.astype("<u2").tobytes()


def decode_values(buf: bytes | memoryview, dtype: str) -> np.ndarray:
    if dtype == "fp32":
        return np.frombuffer(buf, dtype="<f4").astype(np.float32)
    if dtype == "fp16":
        return np.frombuffer(buf, dtype="<f2").astype(np.float32)
    u = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
    return u.view(np.float32)


def round_trip_values(values: np.ndarray, dtype: str) -> np.ndarray:
    """What the receiver will see for ``values``: lets senders stay bit-identical to receivers."""
    return decode_values(encode_values(values, dtype), dtype)


def _planes(raw: bytes | memoryview, item: int) -> np.ndarray:
    """(item, n) byte planes of little-endian values, most significant plane first."""
    return np.frombuffer(raw, np.uint8).reshape(-1, item)[:, ::-1].T


def pack(raw: bytes, dtype: str) -> tuple[bytes, bytes] | None:
    """(raw DEFLATE of the exponent planes, the other planes as they are), or None when that
    is not smaller or more than ``MAX_EXPANSION`` times smaller (then values go plain)."""
    item, z = ITEMSIZE[dtype], PACKED_PLANES[dtype]
    if not raw:
        return None
    planes = _planes(raw, item)
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    packed = deflate.compress(np.ascontiguousarray(planes[:z]).tobytes()) + deflate.flush()
    if len(packed) < planes[:z].size <= MAX_EXPANSION * len(packed):
        return packed, np.ascontiguousarray(planes[z:]).tobytes()
    return None


def check_packed(nbytes: int, nvalues: int, dtype: str, at: int) -> int:
    """Validate a DEFLATE length against the rule ``pack`` follows; the stored bytes that follow.

    The rule bounds decompression: the inflated planes are at most 8x the payload bytes."""
    planes = PACKED_PLANES[dtype] * nvalues
    if not nbytes < planes <= MAX_EXPANSION * nbytes:
        raise CorruptPayloadError("values_nbytes", at, f"{nbytes} DEFLATE bytes for "
                                  f"{planes} bytes of exponent planes")
    return (ITEMSIZE[dtype] - PACKED_PLANES[dtype]) * nvalues


def unpack(packed: bytes | memoryview, rest: bytes | memoryview, nvalues: int, dtype: str,
           at: int) -> bytes:
    """Inverse of ``pack``: little-endian values. The stream must inflate to exactly the
    planes' size and end there."""
    item, z = ITEMSIZE[dtype], PACKED_PLANES[dtype]
    inflate = zlib.decompressobj(-15)
    try:
        top = inflate.decompress(packed, z * nvalues)
    except zlib.error as exc:
        raise CorruptPayloadError("values", at, f"bad DEFLATE stream ({exc})") from None
    if len(top) != z * nvalues or not inflate.eof or inflate.unused_data \
            or inflate.unconsumed_tail:
        raise CorruptPayloadError("values", at, f"DEFLATE stream does not hold {z * nvalues} "
                                  "bytes")
    planes = np.concatenate([np.frombuffer(top, np.uint8), np.frombuffer(rest, np.uint8)])
    return planes.reshape(item, nvalues)[::-1].T.tobytes()
