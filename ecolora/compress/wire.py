"""The binary payload: self-describing framing with bounds-checked decoding (spec §6 layout).

Every version starts with the same 20-byte header, all integers little-endian::

    header  magic 'ECLR' | version u8 | kind u8 | dtype u8 | flags u8 | round u32 |
            segment u16 | reserved u16 | count u32                            (20 bytes)

Format version 2 (written by default) then has, with varint = unsigned LEB128, shortest form::

    records count x ( tensor varint | start varint | n varint | kk varint [| m varint] )
            kk = 0: dense (n values, no positions); kk = k + 1: sparse with k kept entries;
            m (only when k >= 1) = zigzag(M - golomb_reference(n, k)), M the Golomb parameter
    unary_nbytes varint, then the unary stream of every sparse record (``golomb``)
    the remainder stream of every sparse record: all bytes up to the values
    values  every record's values in record order (dense: n, sparse: k), in ``dtype``
    trailer crc32 u32 of everything before it

Version 1 (``wire_v1``: 24-byte record headers, Rice only, streams padded per record) is still
decoded, and written when ``Payload.version == 1``. Why v2: at 0.1% density v1's record header
cost 2.9 bits per kept index and per-record byte padding 2-25% of the position bits; Golomb's
free parameter gains a further 1.5-4% on real top-k masks (docs/codec.md has the numbers).

A record covers [start, start+n) of one flattened tensor. ``decode`` trusts nothing: every
length and count is checked against the remaining bytes and ``max_numel`` before anything is
allocated, only canonical encodings are accepted (so an accepted payload re-encodes to itself),
and each failure raises ``CorruptPayloadError`` naming the field and byte offset. No pickle.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ecolora.compress import bitpack, golomb, wire_v1
from ecolora.errors import CorruptPayloadError

MAGIC = b"ECLR"
V1, V2 = 1, 2
VERSION = V2  # what ``encode`` writes unless the payload asks for v1
KIND_UPDATE, KIND_BROADCAST = 0, 1
DENSE, RICE = wire_v1.DENSE, wire_v1.RICE  # v1 record codings
ALL_SEGMENTS = 0xFFFF
DTYPES = {"fp16": 0, "bf16": 1, "fp32": 2}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}
_HEADER = struct.Struct("<4sBBBBIHHI")
_RECORD = wire_v1.RECORD  # v1 record header (kept here for existing importers)
_CRC = struct.Struct("<I")
_U32 = (1 << 32) - 1
_MIN_V2_RECORD = 4  # bytes: four one-byte varints


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
    version: int = VERSION


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


def encode(
    payload: Payload, rice_rule: str = "empirical_best", params: Sequence[int] | None = None
) -> bytes:
    """Payload -> bytes. ``rice_rule`` picks each tensor's Golomb/Rice parameter (spec §6);
    ``params`` overrides it with one value per sparse record with k >= 1, in record order
    (Rice b for v1, Golomb M for v2): how a payload is re-encoded to check canonicity."""
    if payload.dtype not in DTYPES:
        raise ValueError(f"unknown value dtype {payload.dtype!r}")
    if payload.version not in (V1, V2):
        raise ValueError(f"cannot write format version {payload.version}")
    parts = [
        _HEADER.pack(MAGIC, payload.version, payload.kind, DTYPES[payload.dtype], 0,
                     payload.round, payload.segment, 0, len(payload.records))
    ]
    given = iter(params) if params is not None else None
    if payload.version == V1:
        choose = (lambda n, idx: golomb.choose_parameter(n, idx, rice_rule)) if given is None \
            else (lambda n, idx: next(given))
        parts += wire_v1.encode_records(payload.records, payload.dtype, choose, encode_values)
    else:
        choose = (lambda n, idx: golomb.choose_golomb(n, idx, rice_rule)) if given is None \
            else (lambda n, idx: next(given))
        parts += _encode_v2(payload.records, payload.dtype, choose)
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def _encode_v2(records: list[Record], dtype: str, choose: Callable) -> list[bytes]:
    head = bytearray()
    groups: list[tuple[np.ndarray, int]] = []
    values: list[np.ndarray] = []
    for r in records:
        if not (0 <= r.tensor <= _U32 and 0 <= r.start <= _U32 and 0 <= r.n <= _U32):
            raise ValueError("tensor, start and n must fit in 32 bits")
        for field in (r.tensor, r.start, r.n):
            bitpack.put_varint(head, field)
        if r.indices is None:
            if len(r.values) != r.n:
                raise ValueError("dense record needs n values")
            head.append(0)
        else:
            idx = np.asarray(r.indices, dtype=np.int64)
            k = idx.size
            if len(r.values) != k or (k and not (0 <= idx[0] and idx[-1] < r.n)):
                raise ValueError("sparse record needs k values at sorted indices in [0, n)")
            bitpack.put_varint(head, k + 1)
            if k:
                m = int(choose(r.n, idx))
                if not 1 <= m <= max(1, r.n):
                    raise ValueError(f"Golomb parameter {m} outside [1, max(1, n={r.n})]")
                bitpack.put_varint(head, bitpack.zigzag(m - golomb.golomb_reference(r.n, k)))
                groups.append((idx, m))
        values.append(np.asarray(r.values, dtype=np.float32).ravel())
    unary, rem = golomb.encode_sections(groups)
    bitpack.put_varint(head, len(unary))
    flat = np.concatenate(values) if values else np.zeros(0, np.float32)
    return [bytes(head), unary, rem, encode_values(flat, dtype)]


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
    """Parse and validate a v1 or v2 payload. Raises ``CorruptPayloadError`` on any problem."""
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise CorruptPayloadError("payload", 0, f"expected bytes, got {type(buf).__name__}")
    buf = bytes(buf)
    if len(buf) < _HEADER.size + _CRC.size:
        raise CorruptPayloadError("header", 0, f"payload of {len(buf)} bytes is truncated")
    magic, version, kind, dtype_id, flags, rnd, seg, reserved, count = _HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise CorruptPayloadError("magic", 0, f"expected {MAGIC!r}, got {magic!r}")
    if version not in (V1, V2):
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
    if reserved:  # always written as zero; rejecting it keeps accepted payloads canonical
        raise CorruptPayloadError("reserved", 14, "must be zero")
    dtype = _DTYPE_NAMES[dtype_id]
    if version == V1:
        records = _decode_v1(buf, count, dtype, max_numel, reject_nonfinite)
    else:
        records = _decode_v2(buf, count, dtype, max_numel, reject_nonfinite)
    return Payload(kind, rnd, seg, dtype, records, version)


def _decode_v1(buf: bytes, count: int, dtype: str, max_numel: int, reject: bool) -> list[Record]:
    reader = _Reader(buf)
    reader.take(_HEADER.size, "header")
    if count > (reader.end - reader.pos) // _RECORD.size:
        raise CorruptPayloadError("count", 16, f"{count} records cannot fit the payload")
    records = []
    for _ in range(count):
        tensor, start, n, values, indices, at = wire_v1.decode_record(
            reader, dtype, _ITEMSIZE[dtype], max_numel, decode_values)
        if reject and not np.isfinite(values).all():
            raise CorruptPayloadError("values", at, "non-finite value")
        records.append(Record(tensor, start, n, values, indices))
    if reader.pos != reader.end:
        raise CorruptPayloadError("trailer", reader.pos, f"{reader.end - reader.pos} extra bytes")
    return records


def _decode_v2(buf: bytes, count: int, dtype: str, max_numel: int, reject: bool) -> list[Record]:
    end, pos = len(buf) - _CRC.size, _HEADER.size
    if count > (end - pos) // _MIN_V2_RECORD:
        raise CorruptPayloadError("count", 16, f"{count} records cannot fit the payload")
    heads, groups, nvalues = [], [], 0
    for _ in range(count):
        at = pos
        tensor, pos = bitpack.get_varint(buf, pos, end, "tensor", _U32)
        start, pos = bitpack.get_varint(buf, pos, end, "start", _U32)
        n_at = pos
        n, pos = bitpack.get_varint(buf, pos, end, "n", _U32)
        if n > max_numel:
            raise CorruptPayloadError("n", n_at, f"n={n} exceeds the limit {max_numel}")
        kk, pos = bitpack.get_varint(buf, pos, end, "k", n + 1)
        k = n if kk == 0 else kk - 1
        if kk > 1:
            m_at = pos
            zz, pos = bitpack.get_varint(buf, pos, end, "golomb_m", 1 << 34)
            m = golomb.golomb_reference(n, k) + bitpack.unzigzag(zz)
            if not 1 <= m <= max(1, n):
                raise CorruptPayloadError("golomb_m", m_at, f"M={m} outside [1, max(1, n={n})]")
            groups.append((n, k, m))
        heads.append((tensor, start, n, k, kk == 0, at))
        nvalues += k
    u_at = pos
    unary_nbytes, pos = bitpack.get_varint(buf, pos, end, "unary_nbytes", end - pos)
    vbytes = nvalues * _ITEMSIZE[dtype]
    if unary_nbytes + vbytes > end - pos:
        raise CorruptPayloadError("values", u_at, f"{nvalues} values and {unary_nbytes} unary "
                                  f"bytes cannot fit the {end - pos} bytes left")
    view = memoryview(buf)
    rem_at = pos + unary_nbytes
    found = iter(golomb.decode_sections(view[pos:rem_at], view[rem_at : end - vbytes],
                                        groups, offset=pos))
    values = decode_values(view[end - vbytes : end], dtype)
    if reject and not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise CorruptPayloadError("values", end - vbytes + bad * _ITEMSIZE[dtype],
                                  "non-finite value")
    records, vpos = [], 0
    for tensor, start, n, k, dense, _ in heads:
        indices = None if dense else next(found) if k else np.zeros(0, dtype=np.int64)
        records.append(Record(tensor, start, n, values[vpos : vpos + k], indices))
        vpos += k
    return records
