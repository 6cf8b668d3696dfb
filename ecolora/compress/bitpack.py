"""Bit-level building blocks of the v2 payload: varints and fixed-width bit fields (spec §6).

Why bit-granular: a LoRA tensor at 0.1% density keeps a handful of entries (2 of 1,536 in the
embedded model), so the position code of one tensor is ~20 bits. Padding each tensor's streams
to a byte, as format v1 does, wastes 10-25% there; v2 packs all tensors' streams back to back and
pads once per payload. Why varints: v1's 24-byte record header cost 2.9 bits per kept index at
0.1% density; the same fields as LEB128 varints take 5-8 bytes.

Everything here is vectorized numpy except the varints, which are a handful per record.
Readers trust nothing: a varint must be canonical (shortest form) and within its limit, and
every read is bounds-checked; failures raise ``CorruptPayloadError`` naming the field.
"""

from __future__ import annotations

import numpy as np

from ecolora.errors import CorruptPayloadError

MAX_VARINT_BYTES = 5  # 35 bits: every v2 field is < 2**33


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (>= 0) as an unsigned LEB128 varint, shortest form."""
    if value < 0 or value >> (7 * MAX_VARINT_BYTES):
        raise ValueError(f"varint {value} out of range")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def get_varint(buf: bytes, pos: int, end: int, field: str, limit: int) -> tuple[int, int]:
    """Read a canonical varint at ``pos`` (before ``end``), at most ``limit``; (value, new pos)."""
    value = shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= end:
            raise CorruptPayloadError(field, pos, "truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i:
                raise CorruptPayloadError(field, pos, "non-canonical varint (trailing zero byte)")
            if value > limit:
                raise CorruptPayloadError(field, pos, f"{value} > limit {limit}")
            return value, pos + i + 1
        shift += 7
    raise CorruptPayloadError(field, pos, f"varint longer than {MAX_VARINT_BYTES} bytes")


def zigzag(value: int) -> int:
    """Signed -> unsigned so that small magnitudes stay small: 0, -1, 1, -2 -> 0, 1, 2, 3."""
    return 2 * value if value >= 0 else -2 * value - 1


def unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -(value >> 1) - 1


def _word(width: int) -> int:
    """Bytes of the smallest big-endian unsigned integer holding ``width`` bits (<= 32)."""
    return 1 if width <= 8 else 2 if width <= 16 else 4


def fields_to_bits(values: np.ndarray, width: int) -> np.ndarray:
    """The low ``width`` bits of each value, most significant first, concatenated (bool)."""
    if width == 0 or not values.size:
        return np.zeros(0, dtype=bool)
    w = _word(width)
    as_bytes = values.astype(f">u{w}").view(np.uint8)  # wraps to the low 8w bits: all we keep
    bits = np.unpackbits(as_bytes).reshape(values.size, 8 * w)[:, 8 * w - width :]
    return bits.ravel().view(bool)


def bits_to_fields(bits: np.ndarray, count: int, width: int) -> np.ndarray:
    """Inverse of ``fields_to_bits`` for exactly ``count * width`` bits; int64 values."""
    if width == 0 or not count:
        return np.zeros(count, dtype=np.int64)
    w = _word(width)
    padded = np.zeros((count, 8 * w), dtype=np.uint8)
    padded[:, 8 * w - width :] = bits.reshape(count, width)
    return np.packbits(padded).view(f">u{w}").astype(np.int64)
