"""A second ECLR decoder, written from docs/wire.md alone: pure Python, no numpy, no ecolora.

Why it exists: the issue 13 test of the document is that someone can write a decoder from it.
This one follows the document's sections in order (names in comments) and uses only the
standard library (``struct``, ``zlib``). It returns plain data so that tests can compare it with
``wire.decode`` on golden and random payloads; it raises ``RefError`` where the document says a
payload is invalid. Speed is not a goal.
"""

from __future__ import annotations

import struct
import zlib


class RefError(Exception):
    """The payload breaks a rule of docs/wire.md."""


DTYPES = {0: ("fp16", 2), 1: ("bf16", 2), 2: ("fp32", 4), 3: ("q8", 0), 4: ("q4", 0)}
PLANES = {"fp16": 1, "bf16": 2, "fp32": 2}  # §values: planes DEFLATE-compressed
QMAX = {"q8": 127, "q4": 7}
U32 = (1 << 32) - 1


def _value(raw: bytes, dtype: str) -> float:
    if dtype == "fp16":
        return struct.unpack("<e", raw)[0]
    if dtype == "bf16":
        return struct.unpack("<f", b"\0\0" + raw)[0]
    return struct.unpack("<f", raw)[0]


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


class _Bits:
    """A bit reader, most significant bit of each byte first (§bit order)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def bit(self) -> int:
        if self.pos >= 8 * len(self.data):
            raise RefError("bit stream too short")
        b = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return b

    def field(self, width: int) -> int:
        v = 0
        for _ in range(width):
            v = (v << 1) | self.bit()
        return v

    def rest_is_padding(self) -> bool:
        """The stream ends in this byte and the bits after ``pos`` are zero."""
        if len(self.data) != (self.pos + 7) // 8:
            return False
        return all(self.bit() == 0 for _ in range(8 * len(self.data) - self.pos))


def _varint(buf: bytes, pos: int, end: int, limit: int) -> tuple[int, int]:
    """§varint: LEB128, at most 5 bytes, shortest form, value <= limit."""
    value = 0
    for i in range(5):
        if pos + i >= end:
            raise RefError("truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if byte == 0 and i > 0:
                raise RefError("non-canonical varint")
            if value > limit:
                raise RefError("varint over its limit")
            return value, pos + i + 1
    raise RefError("varint longer than 5 bytes")


def golomb_reference(n: int, k: int) -> int:
    """§golomb_m: the reference parameter, exact integer arithmetic."""
    if k <= 0 or k >= n:
        return 1
    return max(1, ((n - k) * 2839 + k * 1420) // (4096 * k))


def decode(buf: bytes, max_numel: int = 1 << 28, reject_nonfinite: bool = True) -> dict:
    """A payload as {'version', 'kind', 'dtype', 'round', 'segment', 'records'}; each record is
    (tensor, start, n, values: list[float], indices: list[int] | None)."""
    if len(buf) < 24:
        raise RefError("truncated")
    magic, version, kind, dtype_id, flags, rnd, seg, reserved, count = struct.unpack_from(
        "<4sBBBBIHHI", buf)
    if magic != b"ECLR" or version not in (1, 2, 3):
        raise RefError("magic or version")
    if zlib.crc32(buf[:-4]) != struct.unpack_from("<I", buf, len(buf) - 4)[0]:
        raise RefError("crc32")
    if kind not in (0, 1) or reserved:
        raise RefError("kind or reserved")
    if dtype_id not in DTYPES or (dtype_id >= 3) != (version == 3):
        raise RefError("dtype")
    dtype = DTYPES[dtype_id][0]
    allowed = {1: 0, 2: 1, 3: 0}[version]
    if flags & ~allowed:
        raise RefError("flags")
    end = len(buf) - 4
    records = (_v1 if version == 1 else _v23)(buf, end, count, dtype, flags, max_numel)
    if reject_nonfinite and not all(_finite(x) for r in records for x in r[3]):
        raise RefError("non-finite value")
    return {"version": version, "kind": kind, "dtype": dtype, "round": rnd, "segment": seg,
            "records": records}


def _v1(buf: bytes, end: int, count: int, dtype: str, flags: int, max_numel: int) -> list:
    item = DTYPES[[k for k, v in DTYPES.items() if v[0] == dtype][0]][1]
    if count > (end - 20) // 24:
        raise RefError("count")
    pos, records = 20, []
    for _ in range(count):
        if pos + 24 > end:
            raise RefError("record header")
        tensor, start, n, k, coding, b, reserved, unary_nbytes = struct.unpack_from(
            "<IIIIBBHI", buf, pos)
        pos += 24
        if not 1 <= n <= max_numel or k > n or reserved:
            raise RefError("record fields")
        indices = None
        if coding == 0:
            if k != n or b or unary_nbytes:
                raise RefError("dense record")
        elif coding == 1:
            if b > 31 or unary_nbytes > (n + 7) // 8:
                raise RefError("rice_b or unary_nbytes")
            rem_nbytes = (k * b + 7) // 8
            if pos + unary_nbytes + rem_nbytes > end:
                raise RefError("streams")
            unary = _Bits(buf[pos:pos + unary_nbytes])
            rem = _Bits(buf[pos + unary_nbytes:pos + unary_nbytes + rem_nbytes])
            pos += unary_nbytes + rem_nbytes
            if k == 0 and (unary_nbytes or b):
                raise RefError("positions for k=0")
            indices = _rice_positions(unary, rem, n, k, b)
            if k and not unary.rest_is_padding() or not rem.rest_is_padding():
                raise RefError("stream length or padding")
        else:
            raise RefError("coding")
        if pos + k * item > end:
            raise RefError("values")
        vals = [_value(buf[p:p + item], dtype) for p in range(pos, pos + k * item, item)]
        pos += k * item
        records.append((tensor, start, n, vals, indices))
    if pos != end:
        raise RefError("trailing bytes")
    return records


def _rice_positions(unary: _Bits, rem: _Bits, n: int, k: int, b: int) -> list[int]:
    """v1: k indices, per index a unary quotient (zeros, then a one) and a b-bit remainder."""
    out, last = [], -1
    for _ in range(k):
        q = 0
        while not unary.bit():
            q += 1
        last += (q << b | rem.field(b)) + 1
        out.append(last)
    if out and out[-1] >= n:
        raise RefError("index >= n")
    return out


def _v23(buf: bytes, end: int, count: int, dtype: str, flags: int, max_numel: int) -> list:
    if count > (end - 20) // 4:
        raise RefError("count")
    pos, heads, nvalues = 20, [], 0
    for _ in range(count):  # §records
        tensor, pos = _varint(buf, pos, end, U32)
        start, pos = _varint(buf, pos, end, U32)
        n, pos = _varint(buf, pos, end, U32)
        if not 1 <= n <= max_numel:
            raise RefError("n")
        kk, pos = _varint(buf, pos, end, n + 1)
        k, m = (n if kk == 0 else kk - 1), 0
        if kk > 1:
            zz, pos = _varint(buf, pos, end, 1 << 34)
            m = golomb_reference(n, k) + (zz >> 1 if zz % 2 == 0 else -(zz >> 1) - 1)
            if not 1 <= m <= max(1, n):
                raise RefError("golomb_m")
        heads.append((tensor, start, n, k, kk == 0, m))
        nvalues += k
    unary_nbytes, pos = _varint(buf, pos, end, end - pos)
    packed = None
    if flags & 1:
        packed, pos = _varint(buf, pos, end, end - pos)
    vbytes = _value_bytes(dtype, heads, nvalues, packed)
    if unary_nbytes + vbytes > end - pos:
        raise RefError("sections do not fit")
    unary = _Bits(buf[pos:pos + unary_nbytes])
    rem = _Bits(buf[pos + unary_nbytes:end - vbytes])
    if sum(h[3] for h in heads if not h[4]) > 8 * unary_nbytes:
        raise RefError("unary too short")
    groups = []
    for _, _, n, k, dense, m in heads:  # §positions: all quotients of a group, then remainders
        if dense or not k:
            groups.append(None)
            continue
        quotients = []
        for _ in range(k):
            q = 0
            while not unary.bit():
                q += 1
            quotients.append(q)
        groups.append((n, k, m, quotients))
    if not unary.rest_is_padding() or unary.pos == 0 and unary_nbytes:
        raise RefError("unary length or padding")
    indices = []
    for g in groups:
        if g is None:
            indices.append(None)
            continue
        n, k, m, quotients = g
        c = (m - 1).bit_length()
        u = (1 << c) - m
        short = [rem.field(c - 1) if c else 0 for _ in range(k)]
        rs = [(2 * v + rem.bit() - u) if c and v >= u else v for v in short]
        out, last = [], -1
        for q, r in zip(quotients, rs, strict=True):
            last += q * m + r + 1
            out.append(last)
        if out[-1] >= n:
            raise RefError("index >= n")
        indices.append(out)
    if not rem.rest_is_padding():
        raise RefError("remainder length or padding")
    vals = _values(buf[end - vbytes:end], dtype, heads, nvalues, packed)
    return [(tensor, start, n, v, None if dense else (idx or []))
            for (tensor, start, n, _, dense, _), idx, v in zip(heads, indices, vals, strict=True)]


def _value_bytes(dtype: str, heads: list, nvalues: int, packed: int | None) -> int:
    """§values: the size of the values section."""
    if dtype in QMAX:
        scaled = sum(1 for h in heads if h[3])
        codes = nvalues if dtype == "q8" else (nvalues + 1) // 2
        return 4 * scaled + codes
    item = 4 if dtype == "fp32" else 2
    if packed is None:
        return nvalues * item
    z = PLANES[dtype]
    if not packed < z * nvalues <= 8 * packed:
        raise RefError("values_nbytes")
    return packed + (item - z) * nvalues


def _values(raw: bytes, dtype: str, heads: list, nvalues: int, packed: int | None) -> list:
    """Per record, its list of values."""
    ks = [h[3] for h in heads]
    if dtype in QMAX:
        return _quantized(raw, dtype, ks, nvalues)
    item = 4 if dtype == "fp32" else 2
    if packed is not None:  # planes, most significant first; the first z are DEFLATEd
        z = PLANES[dtype]
        inflate = zlib.decompressobj(-15)
        try:
            top = inflate.decompress(raw[:packed], z * nvalues)
        except zlib.error:
            raise RefError("DEFLATE") from None
        if len(top) != z * nvalues or not inflate.eof or inflate.unused_data \
                or inflate.unconsumed_tail:
            raise RefError("DEFLATE size")
        planes = top + raw[packed:]
        raw = bytes(planes[(item - 1 - j) * nvalues + i] for i in range(nvalues)
                    for j in range(item))
    flat = [_value(raw[p:p + item], dtype) for p in range(0, nvalues * item, item)]
    out, at = [], 0
    for k in ks:
        out.append(flat[at:at + k])
        at += k
    return out


def _quantized(raw: bytes, dtype: str, ks: list[int], nvalues: int) -> list:
    """§quantized values: one fp32 scale per record with k >= 1, then the codes."""
    nscaled = sum(1 for k in ks if k)
    scales = [struct.unpack_from("<f", raw, 4 * i)[0] for i in range(nscaled)]
    for i in range(nscaled):  # +0 or a positive normal float32
        bits = struct.unpack_from("<I", raw, 4 * i)[0]
        if bits and not 0x00800000 <= bits < 0x7F800000:
            raise RefError("scale")
    codes_raw = raw[4 * nscaled:]
    qmax = QMAX[dtype]
    if dtype == "q8":
        codes = [b - 256 if b >= 128 else b for b in codes_raw]
    else:
        nib = [(b >> 4, b & 15)[j] for b in codes_raw for j in (0, 1)]
        if nvalues % 2 and nib[-1]:
            raise RefError("q4 padding")
        codes = [v - 16 if v >= 8 else v for v in nib[:nvalues]]
    if any(abs(c) > qmax for c in codes):
        raise RefError("code out of range")
    out, at, si = [], 0, 0
    for k in ks:
        if not k:
            out.append([])
            continue
        s = scales[si]
        si += 1
        if s == 0 and any(codes[at:at + k]):
            raise RefError("nonzero code under a zero scale")
        out.append([struct.unpack("<f", struct.pack("<f", c * s))[0] for c in codes[at:at + k]])
        at += k
    return out
