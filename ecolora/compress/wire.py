"""The binary payload: self-describing framing with bounds-checked decoding (spec §6 layout).

Every version starts with the same 20-byte header, all integers little-endian::

    header  magic 'ECLR' | version u8 | kind u8 | dtype u8 | flags u8 | round u32 |
            segment u16 | reserved u16 | count u32                            (20 bytes)

Format version 2 (written by default) then has, with varint = unsigned LEB128, shortest form::

    records count x ( tensor varint | start varint | n varint | kk varint [| m varint] )
            kk = 0: dense (n values, no positions); kk = k + 1: sparse with k kept entries;
            m (only when k >= 1) = zigzag(M - golomb_reference(n, k)), M the Golomb parameter
    unary_nbytes varint [| values_nbytes varint, if flags bit 0]
    then the unary stream of every sparse record (``golomb``)
    the remainder stream of every sparse record: all bytes up to the values
    values  every record's values in record order (dense: n, sparse: k), in ``dtype``;
            with flags bit 0 (``VALUES_DEFLATE``) as byte planes, most significant first: the
            planes holding sign and exponent (fp16 1, bf16 and fp32 2) as raw DEFLATE in
            values_nbytes bytes, then the other planes as they are (``values``); used only
            when smaller, and at most 8x smaller (this bounds decompression)
    trailer crc32 u32 of everything before it

Format version 3 is version 2 with quantized values (dtype q8 or q4, ``quant``): one fp32
scale per record with k >= 1, then 8-bit codes or 4-bit nibbles; written only for those dtypes.
``docs/wire.md`` specifies every version to the bit (``tests/wire_reference.py`` decodes from it).

Version 1 (``wire_v1``: 24-byte record headers, Rice only, streams padded per record) is still
decoded, and written when ``Payload.version == 1``. Why v2: at 0.1% density v1's record header
cost 2.9 bits per kept index and per-record byte padding 2-25% of the position bits; Golomb's
free parameter gains a further 1-4% on top-k masks; and the kept values of real deltas span
about one binade (the top-k threshold to the maximum), so their exponent bytes compress:
about 30% of fp16 value bytes for ~2 ms per 100k values (docs/codec.md).

A record covers [start, start+n) of one flattened tensor. ``decode`` trusts nothing: every
length and count is checked against the remaining bytes and ``max_numel`` before anything is
allocated, only canonical encodings are accepted (an accepted payload re-encodes to itself;
for DEFLATE values, to the same values), and each failure raises ``CorruptPayloadError``
naming the field and byte offset. No pickle.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ecolora.compress import bitpack, golomb, golomb_search, quant, values, wire_v1
from ecolora.compress.values import decode_values, encode_values
from ecolora.compress.values import round_trip_values as values_round_trip
from ecolora.errors import CorruptPayloadError

MAGIC = b"ECLR"
V1, V2, V3 = 1, 2, 3
VERSION = V2  # what ``encode`` writes unless the payload asks for v1
KIND_UPDATE, KIND_BROADCAST = 0, 1
DENSE, RICE = wire_v1.DENSE, wire_v1.RICE  # v1 record codings
ALL_SEGMENTS = 0xFFFF
DTYPES = {"fp16": 0, "bf16": 1, "fp32": 2, "q8": 3, "q4": 4}  # q8, q4: format v3 only
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_ITEMSIZE = values.ITEMSIZE
_HEADER = struct.Struct("<4sBBBBIHHI")
_RECORD = wire_v1.RECORD  # v1 record header (kept here for existing importers)
_CRC = struct.Struct("<I")
FRAME_BYTES = _HEADER.size + _CRC.size  # what every payload pays once, FedIT's too
_U32 = (1 << 32) - 1
_MIN_V2_RECORD = 4  # bytes: four one-byte varints
VALUES_DEFLATE = 0x01  # v2 header flag: exponent planes of the values DEFLATE-compressed


@dataclass
class Record:
    """One range of one tensor: ``values`` at ``indices`` (None = dense, all n entries)."""

    tensor: int
    start: int
    n: int
    values: np.ndarray  # float32, length k
    indices: np.ndarray | None = None  # int64 offsets in [0, n), sorted
    scale: float | None = None  # q8/q4: the record's scale (decoded, or chosen by the sender)


def round_trip_values(values: np.ndarray, dtype: str) -> np.ndarray:
    """What the receiver will see for one record's ``values``: lets senders stay bit-identical
    to receivers (error feedback subtracts exactly this)."""
    if dtype in quant.QMAX:
        return quant.round_trip(values, dtype)[0]
    return values_round_trip(values, dtype)


@dataclass
class Payload:
    kind: int
    round: int
    segment: int
    dtype: str
    records: list[Record]
    version: int = VERSION


def encode(
    payload: Payload, rice_rule: str = "empirical_best", params: Sequence[int] | None = None,
    compress_values: bool = True,
) -> bytes:
    """Payload -> bytes. ``rice_rule`` picks each tensor's Golomb/Rice parameter (spec §6);
    ``params`` overrides it with one value per sparse record with k >= 1, in record order
    (Rice b for v1, Golomb M for v2): how a payload is re-encoded to check canonicity.
    ``compress_values`` (v2) DEFLATEs the values' exponent bytes when that is smaller."""
    if payload.dtype not in DTYPES:
        raise ValueError(f"unknown value dtype {payload.dtype!r}")
    if payload.version not in (V1, V2, V3):
        raise ValueError(f"cannot write format version {payload.version}")
    version = payload.version
    if payload.dtype in quant.QMAX:  # quantized values exist in v3 only, and v3 only has them
        if version == V1:
            raise ValueError(f"format v1 cannot carry {payload.dtype} values")
        version = V3
    elif version == V3:
        raise ValueError("format v3 carries q8/q4 values only")
    given = iter(params) if params is not None else None
    flags = 0
    if payload.version == V1:
        choose = (lambda n, idx: golomb.choose_parameter(n, idx, rice_rule)) if given is None \
            else (lambda n, idx: next(given))
        parts = wire_v1.encode_records(payload.records, payload.dtype, choose, encode_values)
    else:
        choose = (lambda ns, gaps, ks: golomb_search.choose_golombs(ns, gaps, ks, rice_rule)) \
            if given is None else (lambda ns, gaps, ks: [next(given) for _ in ns])
        flags, parts = _encode_v2(payload.records, payload.dtype, choose, compress_values)
    header = _HEADER.pack(MAGIC, version, payload.kind, DTYPES[payload.dtype], flags,
                          payload.round, payload.segment, 0, len(payload.records))
    body = b"".join([header, *parts])
    return body + _CRC.pack(zlib.crc32(body))


def _encode_v2(
    records: list[Record], dtype: str, choose: Callable, compress: bool
) -> tuple[int, list[bytes]]:
    """(flags, parts) of a v2 body; ``choose(ns, gaps, ks)`` gives the sparse records' M."""
    sparse: list[tuple[int, np.ndarray]] = []  # (record, indices) with k >= 1
    vals: list[np.ndarray] = []
    for i, r in enumerate(records):
        if not (0 <= r.tensor <= _U32 and 0 <= r.start <= _U32 and 1 <= r.n <= _U32):
            raise ValueError("tensor and start must fit in 32 bits, n in [1, 2**32)")
        if r.indices is None:
            if len(r.values) != r.n:
                raise ValueError("dense record needs n values")
        else:
            idx = np.asarray(r.indices, dtype=np.int64)
            if len(r.values) != idx.size or (idx.size and not (0 <= idx[0] and idx[-1] < r.n)):
                raise ValueError("sparse record needs k values at sorted indices in [0, n)")
            if idx.size:
                sparse.append((i, idx))
        vals.append(np.asarray(r.values, dtype=np.float32).ravel())
    gaps, ks = golomb.gaps_of_many([idx for _, idx in sparse])
    ms = [int(m) for m in choose([records[i].n for i, _ in sparse], gaps, ks)]
    param = {i: m for (i, _), m in zip(sparse, ms, strict=True)}
    head = bytearray()
    for i, r in enumerate(records):
        for field in (r.tensor, r.start, r.n):
            bitpack.put_varint(head, field)
        if r.indices is None:
            head.append(0)
            continue
        k = len(r.indices)
        bitpack.put_varint(head, k + 1)
        if k:
            m = param[i]
            if not 1 <= m <= max(1, r.n):
                raise ValueError(f"Golomb parameter {m} outside [1, max(1, n={r.n})]")
            bitpack.put_varint(head, bitpack.zigzag(m - golomb.golomb_reference(r.n, k)))
    unary, rem = golomb.encode_sections(gaps, ks, ms)
    bitpack.put_varint(head, len(unary))
    if dtype in quant.QMAX:
        raw = quant.encode([(v, r.scale) for v, r in zip(vals, records, strict=True)], dtype)
        return 0, [bytes(head), unary, rem, raw]
    raw = encode_values(np.concatenate(vals) if vals else np.zeros(0, np.float32), dtype)
    packed = values.pack(raw, dtype) if compress else None
    if packed is not None:
        bitpack.put_varint(head, len(packed[0]))
        return VALUES_DEFLATE, [bytes(head), unary, rem, *packed]
    return 0, [bytes(head), unary, rem, raw]


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


def decode(
    buf: bytes, max_numel: int = 1 << 28, reject_nonfinite: bool = True,
    max_records: int | None = None,
) -> Payload:
    """Parse and validate a v1 or v2 payload. Raises ``CorruptPayloadError`` on any problem.

    ``max_records`` caps the header's record count before any record is parsed: a receiver
    that knows the adapter layout passes its tensor count (``Method`` does), because parsing
    a record header costs microseconds of Python, and a valid 10 MB payload can hold 2.6M
    four-byte records (issue 13, D1: 24 s and +1 GB before the cap). Without it the count is
    bounded only by the payload length."""
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise CorruptPayloadError("payload", 0, f"expected bytes, got {type(buf).__name__}")
    buf = bytes(buf)
    if len(buf) < _HEADER.size + _CRC.size:
        raise CorruptPayloadError("header", 0, f"payload of {len(buf)} bytes is truncated")
    magic, version, kind, dtype_id, flags, rnd, seg, reserved, count = _HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise CorruptPayloadError("magic", 0, f"expected {MAGIC!r}, got {magic!r}")
    if version not in (V1, V2, V3):
        raise CorruptPayloadError("version", 4, f"unsupported format version {version}")
    (crc,) = _CRC.unpack_from(buf, len(buf) - _CRC.size)
    if zlib.crc32(memoryview(buf)[: -_CRC.size]) != crc:  # no 10 MB copy
        raise CorruptPayloadError("crc32", len(buf) - _CRC.size, "checksum mismatch")
    if kind not in (KIND_UPDATE, KIND_BROADCAST):
        raise CorruptPayloadError("kind", 5, f"unknown payload kind {kind}")
    if dtype_id not in _DTYPE_NAMES or (_DTYPE_NAMES[dtype_id] in quant.QMAX) != (version == V3):
        raise CorruptPayloadError("dtype", 6, f"value dtype id {dtype_id} not in version "
                                  f"{version}")
    if flags & ~(VALUES_DEFLATE if version == V2 else 0):
        raise CorruptPayloadError("flags", 7, f"unknown flags {flags:#x}")
    if reserved:  # always written as zero; rejecting it keeps accepted payloads canonical
        raise CorruptPayloadError("reserved", 14, "must be zero")
    if max_records is not None and count > max_records:
        raise CorruptPayloadError("count", 16, f"{count} records, at most {max_records} "
                                  "expected")
    dtype = _DTYPE_NAMES[dtype_id]
    if version == V1:
        records = _decode_v1(buf, count, dtype, max_numel, reject_nonfinite)
    else:
        records = _decode_v2(buf, count, dtype, max_numel, reject_nonfinite, flags)
    return Payload(kind, rnd, seg, dtype, records, version)



def _decode_v1(buf: bytes, count: int, dtype: str, max_numel: int, reject: bool) -> list[Record]:
    reader = _Reader(buf)
    reader.take(_HEADER.size, "header")
    if count > (reader.end - reader.pos) // _RECORD.size:
        raise CorruptPayloadError("count", 16, f"{count} records cannot fit the payload")
    records = []
    for _ in range(count):
        tensor, start, n, vals, indices, at = wire_v1.decode_record(
            reader, dtype, _ITEMSIZE[dtype], max_numel, decode_values)
        if reject and not np.isfinite(vals).all():
            raise CorruptPayloadError("values", at, "non-finite value")
        records.append(Record(tensor, start, n, vals, indices))
    if reader.pos != reader.end:
        raise CorruptPayloadError("trailer", reader.pos, f"{reader.end - reader.pos} extra bytes")
    return records


def _decode_v2(
    buf: bytes, count: int, dtype: str, max_numel: int, reject: bool, flags: int
) -> list[Record]:
    end, pos = len(buf) - _CRC.size, _HEADER.size
    if count > (end - pos) // _MIN_V2_RECORD:
        raise CorruptPayloadError("count", 16, f"{count} records cannot fit the payload")
    heads, groups, nvalues, ks = [], [], 0, []
    for _ in range(count):
        at = pos
        tensor, pos = bitpack.get_varint(buf, pos, end, "tensor", _U32)
        start, pos = bitpack.get_varint(buf, pos, end, "start", _U32)
        n_at = pos
        n, pos = bitpack.get_varint(buf, pos, end, "n", _U32)
        if not 1 <= n <= max_numel:
            raise CorruptPayloadError("n", n_at, f"n={n} outside [1, {max_numel}]")
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
        ks.append(k)
    u_at = pos
    unary_nbytes, pos = bitpack.get_varint(buf, pos, end, "unary_nbytes", end - pos)
    quantized = dtype in quant.QMAX
    vbytes = quant.nbytes(ks, dtype) if quantized else nvalues * _ITEMSIZE[dtype]
    if flags & VALUES_DEFLATE:
        v_at = pos
        packed, pos = bitpack.get_varint(buf, pos, end, "values_nbytes", end - pos)
        vbytes = packed + values.check_packed(packed, nvalues, dtype, v_at)
    if unary_nbytes + vbytes > end - pos:
        raise CorruptPayloadError("values", u_at, f"{nvalues} values and {unary_nbytes} unary "
                                  f"bytes cannot fit the {end - pos} bytes left")
    view = memoryview(buf)
    rem_at = pos + unary_nbytes
    found = iter(golomb.decode_sections(view[pos:rem_at], view[rem_at : end - vbytes],
                                        groups, offset=pos))
    raw = view[end - vbytes : end]
    if flags & VALUES_DEFLATE:
        raw = values.unpack(raw[:packed], raw[packed:], nvalues, dtype, end - vbytes)
    scales: list[float] = []
    if quantized:
        flat, scales = quant.decode(raw, ks, dtype, end - vbytes)
    else:
        flat = decode_values(raw, dtype)
    bad = first_nonfinite(flat) if reject else None
    if bad is not None:
        raise CorruptPayloadError("values", end - vbytes, f"non-finite value (value {bad})")
    records, vpos, scale = [], 0, iter(scales)
    for tensor, start, n, k, dense, _ in heads:
        indices = None if dense else next(found) if k else np.zeros(0, dtype=np.int64)
        records.append(Record(tensor, start, n, flat[vpos : vpos + k], indices,
                               next(scale) if quantized and k else None))
        vpos += k
    return records


def first_nonfinite(x: np.ndarray, step: int = 1 << 20) -> int | None:
    """Index of the first NaN/Inf in ``x``, or None; checked a slice at a time, so the test
    costs 1 MB of temporaries rather than a bool per value (issue 13, D1)."""
    for s in range(0, x.size, step):
        ok = np.isfinite(x[s : s + step])
        if not ok.all():
            return s + int(np.flatnonzero(~ok)[0])
    return None

