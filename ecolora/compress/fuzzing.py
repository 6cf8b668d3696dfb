"""Structure-aware payload mutations and the decoder's oracle, shared by both fuzzers.

Pure (numpy, struct, zlib: no hypothesis, no I/O, nothing the codec imports) so that the CI
test (``tests/test_wire_fuzz.py``, driven by hypothesis) and the long run by hand
(``benchmarks/fuzz_wire.py``, driven by a seeded numpy generator) mutate payloads the same way
through one two-method ``Chooser`` interface, instead of keeping two copies in step.

Mutations know both layouts (spec §6, ``wire``): v1's fixed 24-byte record headers and v2's
varint record headers. They flip bits, overwrite bytes, set a header field to a boundary or
random value (for v2 also in non-canonical varint form), truncate, insert, delete, splice in
headers, record headers and tails of other payloads, and append garbage. The oracle
(``check``): ``decode`` raises ``CorruptPayloadError`` naming a field, or returns a payload that
agrees with its header and re-encodes, with the parameters stored in the bytes, to exactly the
input (the decoder accepts only canonical encodings). DEFLATE-compressed values are the one
exception (many streams inflate to the same bytes): there the input with its values inflated
must equal the plain re-encoding.
"""

from __future__ import annotations

import struct
import zlib
from typing import Protocol

import numpy as np

from ecolora.compress import bitpack, golomb, values, wire
from ecolora.errors import CorruptPayloadError

RULES = ("rice_kiely_floor", "rice_ceil", "empirical_best")
SIZES = (1, 2, 9, 64, 300, 2000)  # n = 0 is rejected (issue 13, D1)
V1_FIELDS = {"tensor": (0, "<I"), "start": (4, "<I"), "n": (8, "<I"), "k": (12, "<I"),
             "coding": (16, "<B"), "rice_b": (17, "<B"), "reserved": (18, "<H"),
             "unary_nbytes": (20, "<I")}
BOUNDARY = (0, 1, 2, 31, 32, 127, 128, 255, 256, 2**16, 2**32 - 1)
_VARINT_MAX = (1 << 35) - 1


class Chooser(Protocol):
    """Where the randomness comes from: hypothesis draws or a seeded numpy generator."""

    def integer(self, lo: int, hi: int) -> int:
        """A uniform-ish integer in [lo, hi], both inclusive."""
        ...

    def raw(self, size: int) -> bytes:
        """``size`` arbitrary bytes."""
        ...


class NumpyChooser:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def raw(self, size: int) -> bytes:
        return self.rng.bytes(size)


def pick(ch: Chooser, options):
    return options[ch.integer(0, len(options) - 1)]


def with_crc(body: bytes | bytearray) -> bytes:
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def valid_payload(ch: Chooser, sizes: tuple[int, ...] = SIZES, max_records: int = 4) -> bytes:
    """A valid payload: 1..max_records dense or sparse records, any version, dtype and rule."""
    records = []
    for t in range(ch.integer(1, max_records)):
        n = pick(ch, sizes)
        if n and n <= 2000 and ch.integer(0, 3) == 0:
            values = np.random.default_rng(ch.integer(0, 2**32 - 1)).normal(size=n)
            records.append(wire.Record(t, ch.integer(0, 99), n, values.astype(np.float32)))
            continue
        k = ch.integer(0, n) if ch.integer(0, 1) else min(n, ch.integer(0, n // 20 + 7))
        rng = np.random.default_rng(ch.integer(0, 2**32 - 1))
        idx = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
        records.append(wire.Record(t, ch.integer(0, 1 << 20), n,
                                   rng.normal(size=k).astype(np.float32), idx))
    dtype = pick(ch, list(wire.DTYPES))
    version = 3 if dtype in ("q8", "q4") else pick(ch, (1, 2, 2))
    payload = wire.Payload(ch.integer(0, 1), ch.integer(0, 2**32 - 1), ch.integer(0, 2**16 - 1),
                           dtype, records, version)
    return wire.encode(payload, pick(ch, RULES), compress_values=bool(ch.integer(0, 1)))


def _itemsize(buf: bytes) -> int:
    return 4 if buf[6] == wire.DTYPES["fp32"] else 2


def layout(buf: bytes) -> list[list[tuple[str, int, int]]]:
    """Per record header that fits, its fields as (name, start, end), reading ``buf`` as if
    it were valid and stopping where it cannot be read."""
    if len(buf) < wire._HEADER.size:
        return []
    count = struct.unpack_from("<I", buf, 16)[0]
    out: list[list[tuple[str, int, int]]] = []
    pos = wire._HEADER.size
    if buf[4] == wire.V1:
        while len(out) < count and pos + wire._RECORD.size <= len(buf):
            out.append([(name, pos + at, pos + at + struct.calcsize(fmt))
                        for name, (at, fmt) in V1_FIELDS.items()])
            _, _, n, k, coding, b, _, unary_nbytes = wire._RECORD.unpack_from(buf, pos)
            rem = golomb.remainder_nbytes(k, b) if coding == wire.RICE else 0
            pos += wire._RECORD.size + unary_nbytes + rem + k * _itemsize(buf)
        return out
    while len(out) < count:
        fields = []
        try:
            for name in ("tensor", "start", "n", "k"):
                _, end = bitpack.get_varint(buf, pos, len(buf), name, _VARINT_MAX)
                fields.append((name, pos, end))
                pos = end
            if _varint(buf, fields[3]) > 1:
                _, end = bitpack.get_varint(buf, pos, len(buf), "golomb_m", _VARINT_MAX)
                fields.append(("golomb_m", pos, end))
                pos = end
        except CorruptPayloadError:
            break
        out.append(fields)
    return out


def sections(buf: bytes) -> list[tuple[str, int, int]]:
    """v2: the spans of unary_nbytes and (when flagged) values_nbytes, if readable."""
    records = layout(buf)
    if len(buf) < wire._HEADER.size or buf[4] != wire.V2 or \
            len(records) != struct.unpack_from("<I", buf, 16)[0]:
        return []
    pos = records[-1][-1][2] if records else wire._HEADER.size
    names = ["unary_nbytes"] + (["values_nbytes"] if buf[7] & wire.VALUES_DEFLATE else [])
    out = []
    try:
        for name in names:
            _, end = bitpack.get_varint(buf, pos, len(buf), name, _VARINT_MAX)
            out.append((name, pos, end))
            pos = end
    except CorruptPayloadError:
        pass
    return out


def inflated(buf: bytes, out: wire.Payload) -> bytes:
    """``buf`` (accepted, with DEFLATE values) as it would be with plain values."""
    spans = sections(buf)
    packed = _varint(buf, spans[1])
    nvalues = sum(len(r.values) for r in out.records)
    vbytes = packed + values.check_packed(packed, nvalues, out.dtype, 0)
    section = buf[-4 - vbytes : -4]
    plain = values.unpack(section[:packed], section[packed:], nvalues, out.dtype, 0)
    body = buf[:7] + bytes([buf[7] & ~wire.VALUES_DEFLATE]) + buf[8 : spans[0][2]] + \
        buf[spans[1][2] : -4 - vbytes] + plain
    return with_crc(body)


def _varint(buf: bytes, span: tuple[str, int, int]) -> int:
    return bitpack.get_varint(buf, span[1], span[2], span[0], _VARINT_MAX)[0]


def stored_params(buf: bytes) -> list[int]:
    """The Rice b (v1) or Golomb M (v2) of each sparse record with k >= 1, as stored."""
    out = []
    for fields in layout(buf):
        spans = {name: (name, lo, hi) for name, lo, hi in fields}
        if buf[4] == wire.V1:
            if buf[spans["coding"][1]] == wire.RICE and struct.unpack_from(
                    "<I", buf, spans["k"][1])[0]:
                out.append(buf[spans["rice_b"][1]])
        elif "golomb_m" in spans:
            n, k = _varint(buf, spans["n"]), _varint(buf, spans["k"]) - 1
            ref = golomb.golomb_reference(n, k)
            out.append(ref + bitpack.unzigzag(_varint(buf, spans["golomb_m"])))
    return out


def mutate(ch: Chooser, body: bytearray, pool: list[bytes]) -> bytearray:
    """One structure-aware mutation of a CRC-less payload body (returns the new body)."""
    op = ch.integer(0, 9)
    other = pick(ch, pool)[:-4]
    if op == 0 and body:
        body[ch.integer(0, len(body) - 1)] ^= 1 << ch.integer(0, 7)
    elif op == 1 and body:
        body[ch.integer(0, len(body) - 1)] = ch.integer(0, 255)
    elif op in (2, 3):  # header fields: the structural checks live here, so twice the weight
        records = layout(bytes(body)) + [sections(bytes(body))]
        records = [fields for fields in records if fields]
        if records:
            name, lo, hi = pick(ch, pick(ch, records))
            _set_field(ch, body, name, lo, hi)
    elif op == 4:
        del body[ch.integer(0, len(body)) :]
    elif op == 5:
        pos = ch.integer(0, len(body))
        body[pos:pos] = ch.raw(ch.integer(1, 8))
    elif op == 6 and body:
        pos = ch.integer(0, len(body) - 1)
        del body[pos : pos + ch.integer(1, 8)]
    elif op == 7:
        body[: wire._HEADER.size] = other[: wire._HEADER.size]
    elif op == 8:
        mine, theirs = layout(bytes(body)), layout(other)
        if mine and theirs:
            a, b = pick(ch, mine), pick(ch, theirs)
            body[a[0][1] : a[-1][2]] = other[b[0][1] : b[-1][2]]
    else:
        cut = ch.integer(0, len(body))
        tail = other[ch.integer(0, len(other)) :] if ch.integer(0, 1) else ch.raw(ch.integer(0, 63))
        body[cut:] = tail
    return body


def _set_field(ch: Chooser, body: bytearray, name: str, lo: int, hi: int) -> None:
    if body[4] == wire.V1:
        fmt = V1_FIELDS[name][1]
        top = (1 << (8 * struct.calcsize(fmt))) - 1
        (old,) = struct.unpack_from(fmt, body, lo)
        new = pick(ch, BOUNDARY + (old - 1, old + 1, 2 * old, ch.integer(0, top)))
        struct.pack_into(fmt, body, lo, min(max(new, 0), top))
        return
    old = _varint(bytes(body), (name, lo, hi))
    new = pick(ch, BOUNDARY + (old - 1, old + 1, 2 * old, _VARINT_MAX, ch.integer(0, 2**32)))
    out = bytearray()
    bitpack.put_varint(out, min(max(new, 0), _VARINT_MAX))
    if ch.integer(0, 7) == 0 and len(out) < bitpack.MAX_VARINT_BYTES:  # non-canonical form
        out[-1] |= 0x80
        out.append(0)
    body[lo:hi] = out


def make_case(ch: Chooser, pool: list[bytes], max_mutations: int = 4) -> bytes:
    """A case for the decoder: a mutated valid payload, or a random body behind a valid magic
    and version; the CRC is recomputed 19 times in 20 so the structural checks decide."""
    if ch.integer(0, 19) == 0:
        head = wire.MAGIC + bytes([pick(ch, (wire.V1, wire.V2))])
        body = bytearray(head + ch.raw(ch.integer(0, 200)))
    else:
        body = bytearray(pick(ch, pool)[:-4])
        for _ in range(ch.integer(1, max_mutations)):
            body = mutate(ch, body, pool)
    if ch.integer(0, 19) == 0:
        return bytes(body) + ch.raw(4)
    return with_crc(body)


def check(buf: bytes, max_numel: int, reject_nonfinite: bool = True) -> str:
    """'ok' or 'rejected'; AssertionError if ``decode`` accepted bytes that disagree with it.

    Any other exception escapes: for the callers, that is a crash.
    """
    try:
        out = wire.decode(buf, max_numel=max_numel, reject_nonfinite=reject_nonfinite)
    except CorruptPayloadError as err:
        assert err.field and "\n" not in str(err), f"bad error message {err!r}"
        return "rejected"
    assert len(out.records) == struct.unpack_from("<I", buf, 16)[0], "record count"
    assert out.version == buf[4] and out.dtype in wire.DTYPES
    assert out.kind in (wire.KIND_UPDATE, wire.KIND_BROADCAST)
    finite = True
    for rec in out.records:
        assert 1 <= rec.n <= max_numel and rec.values.dtype == np.float32
        idx = rec.indices
        if idx is None:
            assert rec.values.shape == (rec.n,), "dense record size"
        else:
            assert rec.values.shape == idx.shape and idx.dtype == np.int64 and idx.size <= rec.n
            assert idx.size == 0 or (0 <= idx[0] and idx[-1] < rec.n), "index range"
            assert np.all(np.diff(idx) > 0), "indices not increasing"
        finite = finite and bool(np.isfinite(rec.values).all())
    assert finite or not reject_nonfinite
    if finite:  # NaN payload bits need not survive a float32 round trip
        again = wire.encode(out, params=stored_params(buf), compress_values=False)
        if out.version == wire.V2 and buf[7] & wire.VALUES_DEFLATE:
            buf = inflated(buf, out)
        assert again == buf, "accepted non-canonical bytes"
    return "ok"
