"""Raw int32 positions: the project's payload framing without Golomb coding of positions.

Baselines that send "top-k values plus their indices" (top-k with error feedback: Stich et al.
2018, "Sparsified SGD with Memory"; Lin et al. 2018, "Deep Gradient Compression") write every
kept position as a 32-bit integer, and the ``eco-no-golomb`` ablation isolates what EcoLoRA's
lossless position coding (spec §6) saves. ``compress.wire`` has no such option and belongs to
the codec, so this is a separate, self-contained sibling with its own version byte (``wire``
rejects it, and this module rejects ``wire`` payloads)::

    header  the common 20 bytes of ``wire`` (magic, version = RAW_VERSION, kind, dtype, flags,
            round, segment, reserved, record count); flags bit 0 = values packed
    records count x ( tensor varint | start varint | n varint | kk varint )
            kk = 0: dense (n values); kk = k + 1: k kept entries
    [values_nbytes varint, if flags bit 0]
    positions  of every sparse record in order: k little-endian uint32, increasing, < n
    values  every record's values in record order, in ``dtype``; with flags bit 0 packed as
            ``compress.values.pack`` does for ``wire`` v2 (exponent planes DEFLATEd)
    trailer crc32 u32 of everything before it

Record headers are varints and values can be packed exactly as in ``wire`` v2, so with
``pack_values=True`` (``eco-no-golomb``) sizes differ from ``ecolora``'s essentially by the
position bits, the question that ablation asks; ``topk-ef`` sends plain values, as the classic
baseline does. The decoder trusts nothing: lengths are checked before slicing; failures raise
``CorruptPayloadError`` naming the field and byte offset.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ecolora.compress import values as valcode
from ecolora.compress import wire
from ecolora.errors import CorruptPayloadError

RAW_VERSION = 0x52  # 'R': raw positions
PACKED = 0x01  # flags bit 0: values packed like wire v2's VALUES_DEFLATE
_HEADER = struct.Struct("<4sBBBBIHHI")
_CRC = struct.Struct("<I")
_DTYPE_NAMES = {v: k for k, v in wire.DTYPES.items()}


def _varint(out: bytearray, value: int) -> None:
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


def encode(payload: wire.Payload, pack_values: bool = True) -> bytes:
    """Payload -> bytes, sparse records' positions as raw uint32; values packed if smaller."""
    head, positions, vals = bytearray(), [], []
    for r in payload.records:
        for field in (r.tensor, r.start, r.n):
            _varint(head, field)
        if r.indices is None:
            if len(r.values) != r.n:
                raise ValueError("dense record needs n values")
            _varint(head, 0)
        else:
            idx = np.asarray(r.indices, dtype=np.int64)
            if len(r.values) != idx.size or (idx.size and (idx[0] < 0 or idx[-1] >= r.n
                                                            or np.any(np.diff(idx) <= 0))):
                raise ValueError("sparse record needs k values at increasing indices in [0, n)")
            _varint(head, idx.size + 1)
            positions.append(idx.astype("<u4").tobytes())
        vals.append(np.asarray(r.values, dtype=np.float32).ravel())
    raw = wire.encode_values(np.concatenate(vals) if vals else np.zeros(0, np.float32),
                             payload.dtype)
    packed = valcode.pack(raw, payload.dtype) if pack_values else None
    flags = PACKED if packed is not None else 0
    if packed is not None:
        _varint(head, len(packed[0]))
    body = b"".join([_HEADER.pack(wire.MAGIC, RAW_VERSION, payload.kind,
                                  wire.DTYPES[payload.dtype], flags, payload.round,
                                  payload.segment, 0, len(payload.records)),
                     bytes(head), *positions, *(packed if packed is not None else (raw,))])
    return body + _CRC.pack(zlib.crc32(body))


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


def decode(buf: bytes, max_numel: int = 1 << 28, max_records: int | None = None) -> wire.Payload:
    """Parse and validate a raw-position payload; ``CorruptPayloadError`` on any inconsistency.
    ``max_records`` caps the record count as in ``wire.decode``."""
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
    if dtype_id not in _DTYPE_NAMES or flags & ~PACKED or reserved:
        raise CorruptPayloadError("dtype", 6, f"unknown dtype {dtype_id} or flags {flags:#x}")
    dtype = _DTYPE_NAMES[dtype_id]
    rd = _Reader(buf, _HEADER.size, end)
    if count > (end - rd.pos) // 4 or max_records is not None and count > max_records:
        raise CorruptPayloadError("count", 16, f"{count} records cannot fit the payload")
    heads = []
    for _ in range(count):
        at = rd.pos
        tensor, start, n, kk = (rd.varint(f) for f in ("tensor", "start", "n", "k"))
        if not 1 <= n <= max_numel or kk > n + 1:
            raise CorruptPayloadError("n", at, f"n={n}, k+1={kk} out of bounds")
        heads.append((at, tensor, start, n, kk))
    packed_nbytes = rd.varint("values_nbytes") if flags & PACKED else 0
    indices = []
    for at, _, _, n, kk in heads:
        if not kk:
            indices.append(None)
            continue
        idx = np.frombuffer(rd.take(4 * (kk - 1), "positions"), "<u4").astype(np.int64)
        if idx.size and (idx[-1] >= n or np.any(np.diff(idx) <= 0)):
            raise CorruptPayloadError("positions", at, "not strictly increasing below n")
        indices.append(idx)
    sizes = [h[3] if idx is None else idx.size for h, idx in zip(heads, indices, strict=True)]
    total, at = sum(sizes), rd.pos
    if flags & PACKED:
        rest = valcode.check_packed(packed_nbytes, total, dtype, at)
        raw = valcode.unpack(rd.take(packed_nbytes, "values"), rd.take(rest, "values"), total,
                             dtype, at)
    else:
        raw = rd.take(total * valcode.ITEMSIZE[dtype], "values")
    if rd.pos != end:
        raise CorruptPayloadError("trailer", rd.pos, f"{end - rd.pos} extra bytes")
    values = wire.decode_values(raw, dtype)
    if not np.isfinite(values).all():
        raise CorruptPayloadError("values", at, "non-finite value")
    bounds = np.cumsum([0, *sizes])
    return wire.Payload(kind, rnd, seg, dtype, [
        wire.Record(t, st, n, values[bounds[j] : bounds[j + 1]], indices[j])
        for j, (_, t, st, n, _) in enumerate(heads)])
