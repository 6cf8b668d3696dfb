"""The binary payload: self-describing framing with bounds-checked decoding (spec §6 layout).

Layout, all integers little-endian (format version 1)::

    header  magic 'ECLR' | version u8 | kind u8 | dtype u8 | flags u8 | round u32 |
            segment u16 | reserved u16 | count u32                            (20 bytes)
    record  tensor u32 | start u32 | n u32 | k u32 | coding u8 | rice_b u8 |
            reserved u16 | unary_nbytes u32                                    (24 bytes)
            then the unary stream, ceil(k*b/8) remainder bytes (coding=rice only),
            then k values in ``dtype``
    trailer crc32 u32 of everything before it

``coding`` 0 is dense (k == n, no positions), 1 is Rice-coded positions. A record covers the
range [start, start+n) of one flattened tensor. ``decode`` trusts nothing: every length is
checked against the remaining bytes and ``max_numel`` before anything is allocated, and each
failure raises ``CorruptPayloadError`` naming the field and byte offset. No pickle anywhere.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ecolora.compress import golomb
from ecolora.errors import CorruptPayloadError

MAGIC = b"ECLR"
VERSION = 1
KIND_UPDATE, KIND_BROADCAST = 0, 1
DENSE, RICE = 0, 1
ALL_SEGMENTS = 0xFFFF
DTYPES = {"fp16": 0, "bf16": 1, "fp32": 2}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}
_HEADER = struct.Struct("<4sBBBBIHHI")
_RECORD = struct.Struct("<IIIIBBHI")
_CRC = struct.Struct("<I")


@dataclass
class Record:
    """One range of one tensor: ``values`` at ``indices`` (None = dense, all n entries)."""

    tensor: int
    start: int
    n: int
    values: np.ndarray  # float32, length k
    indices: np.ndarray | None = None  # int64 offsets in [0, n), sorted


@dataclass
class Payload:
    kind: int
    round: int
    segment: int
    dtype: str
    records: list[Record]


def encode_values(values: np.ndarray, dtype: str) -> bytes:
    x = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "fp32":
        return x.astype("<f4").tobytes()
    if dtype == "fp16":
        return x.astype("<f2").tobytes()
    # bf16: round to nearest even on the upper 16 bits of the fp32 pattern
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype("<u2").tobytes()


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


def encode(payload: Payload, rice_rule: str = "empirical_best") -> bytes:
    if payload.dtype not in DTYPES:
        raise ValueError(f"unknown value dtype {payload.dtype!r}")
    parts = [
        _HEADER.pack(MAGIC, VERSION, payload.kind, DTYPES[payload.dtype], 0, payload.round,
                     payload.segment, 0, len(payload.records))
    ]
    for r in payload.records:
        vals = encode_values(r.values, payload.dtype)
        if r.indices is None:
            if len(r.values) != r.n:
                raise ValueError("dense record needs n values")
            parts += [_RECORD.pack(r.tensor, r.start, r.n, r.n, DENSE, 0, 0, 0), vals]
            continue
        idx = np.asarray(r.indices, dtype=np.int64)
        k = idx.size
        if len(r.values) != k or (k and not 0 <= idx[0] <= idx[-1] < r.n):
            raise ValueError("sparse record needs k values at sorted indices in [0, n)")
        b = golomb.choose_parameter(r.n, idx, rice_rule) if k else 0
        unary, rem = golomb.encode_positions(idx, b) if k else (b"", b"")
        parts += [_RECORD.pack(r.tensor, r.start, r.n, k, RICE, b, 0, len(unary)), unary, rem,
                  vals]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.view = memoryview(buf)
        self.pos = 0
        self.end = len(buf) - _CRC.size

    def take(self, nbytes: int, field: str) -> memoryview:
        if nbytes < 0 or nbytes > self.end - self.pos:
            raise CorruptPayloadError(
                field, self.pos, f"needs {nbytes} bytes, {self.end - self.pos} remain"
            )
        out = self.view[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return out


def decode(buf: bytes, max_numel: int = 1 << 28, reject_nonfinite: bool = True) -> Payload:
    """Parse and validate a payload. Raises ``CorruptPayloadError`` on any inconsistency."""
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise CorruptPayloadError("payload", 0, f"expected bytes, got {type(buf).__name__}")
    buf = bytes(buf)
    if len(buf) < _HEADER.size + _CRC.size:
        raise CorruptPayloadError("header", 0, f"payload of {len(buf)} bytes is truncated")
    magic, version, kind, dtype_id, flags, rnd, seg, _, count = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CorruptPayloadError("magic", 0, f"expected {MAGIC!r}, got {magic!r}")
    if version != VERSION:
        raise CorruptPayloadError("version", 4, f"unsupported format version {version}")
    (crc,) = _CRC.unpack_from(buf, len(buf) - _CRC.size)
    if zlib.crc32(buf[: -_CRC.size]) != crc:
        raise CorruptPayloadError("crc32", len(buf) - _CRC.size, "checksum mismatch")
    if kind not in (KIND_UPDATE, KIND_BROADCAST):
        raise CorruptPayloadError("kind", 5, f"unknown payload kind {kind}")
    if dtype_id not in _DTYPE_NAMES:
        raise CorruptPayloadError("dtype", 6, f"unknown value dtype id {dtype_id}")
    if flags:
        raise CorruptPayloadError("flags", 7, f"unknown flags {flags:#x}")
    dtype = _DTYPE_NAMES[dtype_id]
    reader = _Reader(buf)
    reader.take(_HEADER.size, "header")
    if count > (reader.end - reader.pos) // _RECORD.size:
        raise CorruptPayloadError("count", 16, f"{count} records cannot fit the payload")
    records = [_decode_record(reader, dtype, max_numel, reject_nonfinite) for _ in range(count)]
    if reader.pos != reader.end:
        raise CorruptPayloadError("trailer", reader.pos, f"{reader.end - reader.pos} extra bytes")
    return Payload(kind, rnd, seg, dtype, records)


def _decode_record(reader: _Reader, dtype: str, max_numel: int, reject_nonfinite: bool) -> Record:
    at = reader.pos
    tensor, start, n, k, coding, b, reserved, unary_nbytes = _RECORD.unpack(
        reader.take(_RECORD.size, "record")
    )
    if n > max_numel:
        raise CorruptPayloadError("n", at + 8, f"n={n} exceeds the limit {max_numel}")
    if k > n:
        raise CorruptPayloadError("k", at + 12, f"k={k} > n={n}")
    if reserved:
        raise CorruptPayloadError("reserved", at + 18, "must be zero")
    indices = None
    if coding == DENSE:
        if k != n or b or unary_nbytes:
            raise CorruptPayloadError("coding", at + 16, "dense record with k != n or positions")
    elif coding == RICE:
        if b > golomb.MAX_RICE:
            raise CorruptPayloadError("rice_b", at + 17, f"parameter {b} > {golomb.MAX_RICE}")
        if unary_nbytes > (n + 7) // 8:
            raise CorruptPayloadError("unary_nbytes", at + 20, f"{unary_nbytes} > bound for n={n}")
        unary = reader.take(unary_nbytes, "unary")
        rem = reader.take(golomb.remainder_nbytes(k, b), "remainders")
        indices = golomb.decode_positions(unary, rem, n, k, b, offset=at + _RECORD.size)
    else:
        raise CorruptPayloadError("coding", at + 16, f"unknown coding {coding}")
    values = decode_values(reader.take(k * _ITEMSIZE[dtype], "values"), dtype)
    if reject_nonfinite and not np.isfinite(values).all():
        raise CorruptPayloadError("values", at, "non-finite value")
    return Record(tensor, start, n, values, indices)
