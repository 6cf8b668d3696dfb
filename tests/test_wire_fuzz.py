"""Structure-aware fuzzing of ``wire.decode`` (CI budget: a few thousand cases, well under 20 s).

Every mutated payload gets a fresh CRC32 trailer, so it reaches the structural validation
instead of dying at the checksum. The property: ``decode`` either raises
``CorruptPayloadError`` or returns a payload that agrees with its own bytes, which we check by
re-encoding it (the decoder only accepts canonical streams, so this must reproduce the input).
Nothing else may escape, and no case may take long. The long run is ``benchmarks/fuzz_wire.py``.
"""

from __future__ import annotations

import struct
import time
import zlib
from functools import cache

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ecolora.compress import golomb, wire
from ecolora.errors import CorruptPayloadError

MAX_NUMEL = 1 << 16
RULES = ("rice_kiely_floor", "rice_ceil", "empirical_best")
FIELDS = ("tensor", "start", "n", "k", "coding", "rice_b", "reserved", "unary_nbytes")
FIELD_AT = {"tensor": 0, "start": 4, "n": 8, "k": 12, "coding": 16, "rice_b": 17,
            "reserved": 18, "unary_nbytes": 20}
FIELD_FMT = {"coding": "<B", "rice_b": "<B", "reserved": "<H"}


@cache
def valid_payload(seed: int) -> bytes:
    """A small valid payload: 1-4 records, dense or sparse, any dtype and parameter rule."""
    rng = np.random.default_rng(seed)
    records = []
    for t in range(int(rng.integers(1, 5))):
        n = int(rng.choice([0, 1, 2, 9, 64, 300, 2000]))
        if n and rng.random() < 0.25:
            records.append(wire.Record(t, 0, n, rng.normal(size=n).astype(np.float32)))
            continue
        k = int(rng.integers(0, n + 1)) if rng.random() < 0.5 else min(n, int(rng.integers(0, 8)))
        idx = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
        records.append(wire.Record(t, int(rng.integers(0, 99)), n,
                                   rng.normal(size=k).astype(np.float32), idx))
    dtype = ("fp16", "bf16", "fp32")[seed % 3]
    payload = wire.Payload(seed % 2, seed, seed % 7, dtype, records)
    return wire.encode(payload, RULES[seed % 3])


def record_offsets(buf: bytes) -> list[int]:
    """Byte offsets of the record headers that fit in ``buf``, read as if it were valid."""
    if len(buf) < wire._HEADER.size:
        return []
    count = struct.unpack_from("<I", buf, 16)[0]
    item = 4 if buf[6] == wire.DTYPES["fp32"] else 2
    pos, out = wire._HEADER.size, []
    while len(out) < count and pos + wire._RECORD.size <= len(buf):
        out.append(pos)
        _, _, n, k, coding, b, _, unary_nbytes = wire._RECORD.unpack_from(buf, pos)
        rem = golomb.remainder_nbytes(k, b) if coding == wire.RICE else 0
        pos += wire._RECORD.size + unary_nbytes + rem + k * item
    return out


def with_crc(body: bytes | bytearray) -> bytes:
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def reencode(buf: bytes, out: wire.Payload) -> bytes:
    """The bytes ``out`` must have come from, using the Rice parameters stored in ``buf``."""
    parts = [buf[: wire._HEADER.size]]
    for rec, at in zip(out.records, record_offsets(buf), strict=True):
        b = buf[at + 17]
        values = wire.encode_values(rec.values, out.dtype)
        if rec.indices is None:
            parts += [wire._RECORD.pack(rec.tensor, rec.start, rec.n, rec.n, 0, 0, 0, 0), values]
            continue
        k = len(rec.indices)
        unary, rem = golomb.encode_positions(rec.indices, b) if k else (b"", b"")
        parts += [wire._RECORD.pack(rec.tensor, rec.start, rec.n, k, 1, b, 0, len(unary)),
                  unary, rem, values]
    return with_crc(b"".join(parts))


def check(buf: bytes, reject_nonfinite: bool = True) -> None:
    """Decode ``buf``: CorruptPayloadError, or a payload consistent with its own header."""
    t0 = time.perf_counter()
    try:
        out = wire.decode(buf, max_numel=MAX_NUMEL, reject_nonfinite=reject_nonfinite)
    except CorruptPayloadError as err:
        assert err.field and "\n" not in str(err)
        return
    finally:
        assert time.perf_counter() - t0 < 2.0, "decode took too long"
    assert len(out.records) == struct.unpack_from("<I", buf, 16)[0]
    assert out.dtype in wire.DTYPES and out.kind in (wire.KIND_UPDATE, wire.KIND_BROADCAST)
    finite = True
    for rec in out.records:
        assert 0 <= rec.n <= MAX_NUMEL and rec.values.dtype == np.float32
        if rec.indices is None:
            assert rec.values.shape == (rec.n,)
        else:
            idx = rec.indices
            assert rec.values.shape == idx.shape and idx.dtype == np.int64
            assert idx.size <= rec.n
            assert np.all(np.diff(idx) > 0) and (idx.size == 0 or 0 <= idx[0] <= idx[-1] < rec.n)
        finite = finite and bool(np.isfinite(rec.values).all())
        assert finite or not reject_nonfinite
    if finite:  # NaN payload bits need not survive a float32 round trip
        assert reencode(buf, out) == buf, "accepted a payload that is not canonical"


def mutate(data, body: bytearray) -> bytearray:
    """One structure-aware mutation of a CRC-less payload body."""
    op = data.draw(st.sampled_from(["flip", "byte", "field", "truncate", "insert", "delete",
                                    "splice_header", "splice_record", "append"]))
    other = valid_payload(data.draw(st.integers(0, 63), label="other"))[:-4]
    if op == "flip" and body:
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "byte" and body:
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    elif op == "field":
        offsets = record_offsets(bytes(body))
        if offsets:
            name = data.draw(st.sampled_from(FIELDS))
            at = data.draw(st.sampled_from(offsets)) + FIELD_AT[name]
            fmt = FIELD_FMT.get(name, "<I")
            top = (1 << (8 * struct.calcsize(fmt))) - 1
            (old,) = struct.unpack_from(fmt, body, at)
            new = data.draw(st.sampled_from([0, 1, 2, 31, 32, top, old - 1, old + 1, old * 2])
                            | st.integers(0, top))
            struct.pack_into(fmt, body, at, min(max(new, 0), top))
    elif op == "truncate":
        del body[data.draw(st.integers(0, len(body))):]
    elif op == "insert":
        pos = data.draw(st.integers(0, len(body)))
        body[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    elif op == "delete" and body:
        pos = data.draw(st.integers(0, len(body) - 1))
        del body[pos : pos + data.draw(st.integers(1, 8))]
    elif op == "splice_header":
        body[: wire._HEADER.size] = other[: wire._HEADER.size]
    elif op == "splice_record":
        mine, theirs = record_offsets(bytes(body)), record_offsets(other)
        if mine and theirs:
            a, b = data.draw(st.sampled_from(mine)), data.draw(st.sampled_from(theirs))
            body[a : a + wire._RECORD.size] = other[b : b + wire._RECORD.size]
    else:
        body += data.draw(st.binary(min_size=1, max_size=16))
    return body


@settings(max_examples=2500, deadline=None)
@given(st.data())
def test_mutated_payloads_with_fixed_crc(data):
    """1-3 structure-aware mutations, CRC recomputed (sometimes kept stale)."""
    body = bytearray(valid_payload(data.draw(st.integers(0, 63)))[:-4])
    for _ in range(data.draw(st.integers(1, 3))):
        body = mutate(data, body)
    buf = with_crc(body) if data.draw(st.integers(0, 9)) else bytes(body) + b"\0\0\0\0"
    check(buf, reject_nonfinite=data.draw(st.booleans()))


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from([wire.KIND_UPDATE, wire.KIND_BROADCAST, 7]), st.integers(0, 3),
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 70_000), st.integers(0, 300),
                       st.integers(0, 2), st.integers(0, 33), st.integers(0, 400)),
             max_size=3),
    st.binary(max_size=600),
)
def test_random_records_with_valid_framing(kind, dtype, fields, tail):
    """Hand-built headers and records with arbitrary fields, then arbitrary bytes."""
    body = wire._HEADER.pack(wire.MAGIC, wire.VERSION, kind, dtype, 0, 0, 0, 0, len(fields))
    for n, start, k, coding, b, unary_nbytes in fields:
        body += wire._RECORD.pack(0, start, n, k, coding, b, 0, unary_nbytes)
    check(with_crc(body + tail))


@settings(max_examples=600, deadline=None)
@given(st.integers(0, 63), st.integers(0, 63), st.integers(0, 400))
def test_spliced_tails(seed_a, seed_b, cut):
    """The head of one payload glued to the tail of another, CRC recomputed."""
    a, b = valid_payload(seed_a)[:-4], valid_payload(seed_b)[:-4]
    check(with_crc(a[: min(cut, len(a))] + b[min(cut, len(b)) :]))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 63))
def test_valid_payloads_are_accepted_and_canonical(seed):
    buf = valid_payload(seed)
    check(buf)
    wire.decode(buf, max_numel=MAX_NUMEL)  # must not raise


def test_unary_stream_padding_and_overflow_are_rejected():
    """Hand-made streams: nonzero padding, k=0 with b, huge quotients with b=31."""
    idx = np.array([1, 5], np.int64)
    unary, rem = golomb.encode_positions(idx, 2)
    bad_rem = bytes([rem[0] | 1])  # 2 x 2 remainder bits, then padding
    for args in [(unary, bad_rem, 8, 2, 2), (b"", b"", 8, 0, 3), (unary, rem, 8, 3, 2),
                 (b"\x01", b"\xff\xff\xff\xfe", 2**32 - 1, 1, 31), (b"\xff", rem, 8, 2, 2),
                 (unary, rem[:0], 8, 2, 2), (unary, rem, 8, 2, 40), (unary, rem, 8, 9, 2)]:
        try:
            golomb.decode_positions(*args)
        except CorruptPayloadError:
            continue
        raise AssertionError(f"accepted {args}")
