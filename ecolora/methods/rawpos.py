"""Raw int32 positions: the framing of ``compress.wire`` v1 without Golomb coding.

Baselines that send "top-k values plus their indices" (top-k with error feedback: Stich et al.
2018, "Sparsified SGD with Memory"; Lin et al. 2018, "Deep Gradient Compression") write every
kept position as a 32-bit integer, and the ``eco-no-golomb`` ablation isolates what EcoLoRA's
lossless position coding (spec §6) saves. ``wire`` has no such option and belongs to the codec,
so this module is a separate, self-contained sibling: same header, record header, value dtypes
and CRC trailer, and one extra record coding, ``RAW32 = 2``, whose body is ``k`` little-endian
uint32 offsets followed by the ``k`` values. Sizes therefore differ from ``wire`` payloads only
by the position bits, which is the comparison the ablation is about.

The decoder trusts nothing, like ``wire.decode``: lengths are checked before slicing, positions
must be strictly increasing and below ``n``, and failures raise ``CorruptPayloadError``.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ecolora.compress import wire
from ecolora.errors import CorruptPayloadError

RAW32 = 2
_HEADER, _RECORD, _CRC = wire._HEADER, wire._RECORD, struct.Struct("<I")
_ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}


def encode(payload: wire.Payload) -> bytes:
    """Like ``wire.encode``, with sparse records' positions as raw uint32 (coding ``RAW32``)."""
    parts = [_HEADER.pack(wire.MAGIC, wire.VERSION, payload.kind, wire.DTYPES[payload.dtype], 0,
                          payload.round, payload.segment, 0, len(payload.records))]
    for r in payload.records:
        vals = wire.encode_values(r.values, payload.dtype)
        if r.indices is None:
            if len(r.values) != r.n:
                raise ValueError("dense record needs n values")
            parts += [_RECORD.pack(r.tensor, r.start, r.n, r.n, wire.DENSE, 0, 0, 0), vals]
            continue
        idx = np.asarray(r.indices, dtype=np.int64)
        if len(r.values) != idx.size or (idx.size and not 0 <= idx[0] <= idx[-1] < r.n):
            raise ValueError("sparse record needs k values at sorted indices in [0, n)")
        parts += [_RECORD.pack(r.tensor, r.start, r.n, idx.size, RAW32, 0, 0, 0),
                  idx.astype("<u4").tobytes(), vals]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def decode(buf: bytes, max_numel: int = 1 << 28) -> wire.Payload:
    """Parse and validate a raw-position payload; ``CorruptPayloadError`` on any inconsistency."""
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise CorruptPayloadError("payload", 0, f"expected bytes, got {type(buf).__name__}")
    buf = bytes(buf)
    if len(buf) < _HEADER.size + _CRC.size:
        raise CorruptPayloadError("header", 0, f"payload of {len(buf)} bytes is truncated")
    magic, version, kind, dtype_id, flags, rnd, seg, _, count = _HEADER.unpack_from(buf, 0)
    if magic != wire.MAGIC:
        raise CorruptPayloadError("magic", 0, f"expected {wire.MAGIC!r}, got {magic!r}")
    if version != wire.VERSION:
        raise CorruptPayloadError("version", 4, f"unsupported format version {version}")
    end = len(buf) - _CRC.size
    if zlib.crc32(buf[:end]) != _CRC.unpack_from(buf, end)[0]:
        raise CorruptPayloadError("crc32", end, "checksum mismatch")
    if kind not in (wire.KIND_UPDATE, wire.KIND_BROADCAST):
        raise CorruptPayloadError("kind", 5, f"unknown payload kind {kind}")
    names = {v: k for k, v in wire.DTYPES.items()}
    if dtype_id not in names or flags:
        raise CorruptPayloadError("dtype", 6, f"unknown dtype {dtype_id} or flags {flags:#x}")
    dtype, pos, records = names[dtype_id], _HEADER.size, []
    if count > (end - pos) // _RECORD.size:
        raise CorruptPayloadError("count", 16, f"{count} records cannot fit the payload")
    for _ in range(count):
        if end - pos < _RECORD.size:
            raise CorruptPayloadError("record", pos, "truncated record header")
        tensor, start, n, k, coding, b, reserved, unary = _RECORD.unpack_from(buf, pos)
        at, pos = pos, pos + _RECORD.size
        if n > max_numel or k > n or b or reserved or unary:
            raise CorruptPayloadError("record", at, f"bad record n={n} k={k}")
        if coding not in (wire.DENSE, RAW32) or (coding == wire.DENSE and k != n):
            raise CorruptPayloadError("coding", at + 16, f"coding {coding} with k={k}, n={n}")
        idx = None
        if coding == RAW32:
            if 4 * k > end - pos:
                raise CorruptPayloadError("positions", pos, "truncated positions")
            idx = np.frombuffer(buf, "<u4", count=k, offset=pos).astype(np.int64)
            pos += 4 * k
            if k and (idx[-1] >= n or np.any(np.diff(idx) <= 0)):
                raise CorruptPayloadError("positions", at, "not strictly increasing below n")
        nbytes = k * _ITEMSIZE[dtype]
        if nbytes > end - pos:
            raise CorruptPayloadError("values", pos, "truncated values")
        values = wire.decode_values(buf[pos : pos + nbytes], dtype)
        pos += nbytes
        if not np.isfinite(values).all():
            raise CorruptPayloadError("values", at, "non-finite value")
        records.append(wire.Record(tensor, start, n, values, idx))
    if pos != end:
        raise CorruptPayloadError("trailer", pos, f"{end - pos} extra bytes")
    return wire.Payload(kind, rnd, seg, dtype, records)
