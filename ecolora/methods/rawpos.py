"""Raw int32 positions: the project's payload framing without Golomb coding of positions.

Baselines that send "top-k values plus their indices" (top-k with error feedback: Stich et al.
2018, "Sparsified SGD with Memory"; Lin et al. 2018, "Deep Gradient Compression") write every
kept position as a 32-bit integer, and the ``eco-no-golomb`` ablation isolates what EcoLoRA's
lossless position coding (spec §6) saves. ``compress.wire`` has no such option and belongs to
the codec, so this is a separate, self-contained sibling with its own version byte (``wire``
rejects it, and this module rejects ``wire`` payloads)::

    header  the common 20 bytes of ``wire`` (magic, version = RAW_VERSION, kind, dtype, flags,
            round, segment, reserved, record count)
    records count x ( tensor varint | start varint | n varint | kk varint )
            kk = 0: dense (n values); kk = k + 1: k kept entries
            then, sparse only, k little-endian uint32 offsets, strictly increasing, < n
            then the record's values in ``dtype``
    trailer crc32 u32 of everything before it

Record headers are varints (unsigned LEB128), as compact as ``wire``'s, so sizes differ from
``wire`` payloads essentially by the position bits: the comparison the ablation is about. The
decoder trusts nothing: lengths are checked before slicing; failures raise
``CorruptPayloadError`` naming the field and byte offset.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ecolora.compress import wire
from ecolora.errors import CorruptPayloadError

RAW_VERSION = 0x52  # 'R': raw positions
_HEADER = struct.Struct("<4sBBBBIHHI")
_CRC = struct.Struct("<I")
_ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}
_DTYPE_NAMES = {v: k for k, v in wire.DTYPES.items()}


def _varint(out: bytearray, value: int) -> None:
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


def encode(payload: wire.Payload) -> bytes:
    """Payload -> bytes, sparse records' positions as raw uint32."""
    out = bytearray(_HEADER.pack(wire.MAGIC, RAW_VERSION, payload.kind,
                                 wire.DTYPES[payload.dtype], 0, payload.round, payload.segment, 0,
                                 len(payload.records)))
    for r in payload.records:
        for field in (r.tensor, r.start, r.n):
            _varint(out, field)
        if r.indices is None:
            if len(r.values) != r.n:
                raise ValueError("dense record needs n values")
            _varint(out, 0)
        else:
            idx = np.asarray(r.indices, dtype=np.int64)
            if len(r.values) != idx.size or (idx.size and (idx[0] < 0 or idx[-1] >= r.n
                                                            or np.any(np.diff(idx) <= 0))):
                raise ValueError("sparse record needs k values at increasing indices in [0, n)")
            _varint(out, idx.size + 1)
            out += idx.astype("<u4").tobytes()
        out += wire.encode_values(r.values, payload.dtype)
    return bytes(out) + _CRC.pack(zlib.crc32(out))


class _Reader:
    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def varint(self, field: str) -> int:
        value, shift, at = 0, 0, self.pos
        while True:
            if self.pos >= self.end or shift > 35:
                raise CorruptPayloadError(field, at, "truncated or overlong varint")
            byte = self.buf[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if byte == 0 and shift > 7:
                    raise CorruptPayloadError(field, at, "non-canonical varint")
                return value

    def take(self, nbytes: int, field: str) -> bytes:
        if nbytes > self.end - self.pos:
            raise CorruptPayloadError(field, self.pos, f"needs {nbytes} bytes, "
                                      f"{self.end - self.pos} remain")
        self.pos += nbytes
        return self.buf[self.pos - nbytes : self.pos]


def decode(buf: bytes, max_numel: int = 1 << 28) -> wire.Payload:
    """Parse and validate a raw-position payload; ``CorruptPayloadError`` on any inconsistency."""
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise CorruptPayloadError("payload", 0, f"expected bytes, got {type(buf).__name__}")
    buf = bytes(buf)
    if len(buf) < _HEADER.size + _CRC.size:
        raise CorruptPayloadError("header", 0, f"payload of {len(buf)} bytes is truncated")
    magic, version, kind, dtype_id, flags, rnd, seg, reserved, count = _HEADER.unpack_from(buf)
    if magic != wire.MAGIC:
        raise CorruptPayloadError("magic", 0, f"expected {wire.MAGIC!r}, got {magic!r}")
    if version != RAW_VERSION:
        raise CorruptPayloadError("version", 4, f"not a raw-position payload (version {version})")
    end = len(buf) - _CRC.size
    if zlib.crc32(buf[:end]) != _CRC.unpack_from(buf, end)[0]:
        raise CorruptPayloadError("crc32", end, "checksum mismatch")
    if kind not in (wire.KIND_UPDATE, wire.KIND_BROADCAST):
        raise CorruptPayloadError("kind", 5, f"unknown payload kind {kind}")
    if dtype_id not in _DTYPE_NAMES or flags or reserved:
        raise CorruptPayloadError("dtype", 6, f"unknown dtype {dtype_id} or flags {flags:#x}")
    dtype = _DTYPE_NAMES[dtype_id]
    rd = _Reader(buf, _HEADER.size, end)
    if count > (end - rd.pos) // 4:
        raise CorruptPayloadError("count", 16, f"{count} records cannot fit the payload")
    records = []
    for _ in range(count):
        at = rd.pos
        tensor, start, n, kk = (rd.varint(f) for f in ("tensor", "start", "n", "k"))
        if n > max_numel or kk > n + 1:
            raise CorruptPayloadError("n", at, f"n={n}, k+1={kk} out of bounds")
        idx = None
        if kk:
            k = kk - 1
            idx = np.frombuffer(rd.take(4 * k, "positions"), "<u4").astype(np.int64)
            if k and (idx[-1] >= n or np.any(np.diff(idx) <= 0)):
                raise CorruptPayloadError("positions", at, "not strictly increasing below n")
        size = n if idx is None else idx.size
        values = wire.decode_values(rd.take(size * _ITEMSIZE[dtype], "values"), dtype)
        if not np.isfinite(values).all():
            raise CorruptPayloadError("values", at, "non-finite value")
        records.append(wire.Record(tensor, start, n, values, idx))
    if rd.pos != end:
        raise CorruptPayloadError("trailer", rd.pos, f"{end - rd.pos} extra bytes")
    return wire.Payload(wire.KIND_UPDATE if kind == wire.KIND_UPDATE else wire.KIND_BROADCAST,
                        rnd, seg, dtype, records)
