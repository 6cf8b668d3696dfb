"""Structure-aware fuzzing of ``wire.decode`` (CI budget: a few thousand cases, seconds).

The mutations and the oracle live in ``ecolora.compress.fuzzing``, shared with the long run
``benchmarks/fuzz_wire.py``; here hypothesis drives them. Every mutated payload gets a fresh
CRC32 trailer (19 times in 20), so it reaches the structural validation instead of dying at
the checksum. Property: ``decode`` raises ``CorruptPayloadError`` or returns a payload that
re-encodes to exactly its input; nothing else escapes and no case takes long.
"""

from __future__ import annotations

import time
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecolora.compress import bitpack, fuzzing, golomb, wire
from ecolora.errors import CorruptPayloadError

MAX_NUMEL = 1 << 16


class HypothesisChooser:
    """``fuzzing.Chooser`` on hypothesis draws, so failures shrink."""

    def __init__(self, data) -> None:
        self.data = data

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def raw(self, size: int) -> bytes:
        return self.data.draw(st.binary(min_size=size, max_size=size))


@cache
def pool() -> list[bytes]:
    return [fuzzing.valid_payload(fuzzing.NumpyChooser(np.random.default_rng(seed)))
            for seed in range(64)]


def check(buf: bytes, reject_nonfinite: bool = True) -> None:
    t0 = time.perf_counter()
    try:
        fuzzing.check(buf, MAX_NUMEL, reject_nonfinite)
    finally:
        assert time.perf_counter() - t0 < 2.0, "decode took too long"


def test_pool_has_every_version_and_is_accepted():
    assert {buf[4] for buf in pool()} == {wire.V1, wire.V2, wire.V3}
    assert all(fuzzing.check(buf, MAX_NUMEL) == "ok" for buf in pool())


@settings(max_examples=2500, deadline=None)
@given(st.data())
def test_mutated_payloads(data):
    """1-4 structure-aware mutations (the shared mutator), CRC recomputed 19 times in 20."""
    ch = HypothesisChooser(data)
    check(fuzzing.make_case(ch, pool()), reject_nonfinite=data.draw(st.booleans()))


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([wire.KIND_UPDATE, wire.KIND_BROADCAST, 7]), st.integers(0, 3),
    st.lists(st.tuples(st.integers(0, 2**33), st.integers(0, 70_000), st.integers(0, 300),
                       st.integers(0, 2**33)), max_size=3),
    st.integers(0, 400), st.binary(max_size=600),
)
def test_random_v2_records_with_valid_framing(kind, dtype, fields, unary_nbytes, tail):
    """Hand-built v2 headers with arbitrary varint fields, then arbitrary bytes."""
    head = bytearray(wire._HEADER.pack(wire.MAGIC, wire.V2, kind, dtype, 0, 0, 0, 0,
                                       len(fields)))
    for n, start, kk, m in fields:
        for value in (0, start, min(n, 2**35 - 1), kk):
            bitpack.put_varint(head, value)
        if kk > 1:
            bitpack.put_varint(head, m)
    bitpack.put_varint(head, unary_nbytes)
    check(fuzzing.with_crc(bytes(head) + tail))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([wire.KIND_UPDATE, wire.KIND_BROADCAST, 7]), st.integers(0, 3),
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 70_000), st.integers(0, 300),
                       st.integers(0, 2), st.integers(0, 33), st.integers(0, 400)),
             max_size=3),
    st.binary(max_size=600),
)
def test_random_v1_records_with_valid_framing(kind, dtype, fields, tail):
    """Hand-built v1 headers and records with arbitrary fields, then arbitrary bytes."""
    body = wire._HEADER.pack(wire.MAGIC, wire.V1, kind, dtype, 0, 0, 0, 0, len(fields))
    for n, start, k, coding, b, unary_nbytes in fields:
        body += wire._RECORD.pack(0, start, n, k, coding, b, 0, unary_nbytes)
    check(fuzzing.with_crc(body + tail))


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 63), st.integers(0, 63), st.integers(0, 400))
def test_spliced_tails(a, b, cut):
    """The head of one payload glued to the tail of another, CRC recomputed."""
    x, y = pool()[a][:-4], pool()[b][:-4]
    check(fuzzing.with_crc(x[: min(cut, len(x))] + y[min(cut, len(y)) :]))


def test_non_canonical_varints_are_rejected():
    buf = bytearray(pool()[next(i for i, p in enumerate(pool()) if p[4] == wire.V2)][:-4])
    name, lo, hi = fuzzing.layout(bytes(buf))[0][0]
    buf[lo:hi] = bytes([buf[lo] | 0x80, 0]) if hi - lo == 1 else buf[lo:hi]
    with pytest.raises(CorruptPayloadError) as err:
        wire.decode(fuzzing.with_crc(buf))
    assert err.value.field == name and "non-canonical" in str(err.value)


def test_v1_unary_stream_padding_and_overflow_are_rejected():
    """Hand-made v1 streams: nonzero padding, k=0 with b, huge quotients with b=31."""
    idx = np.array([1, 5], np.int64)
    unary, rem = golomb.encode_positions(idx, 2)
    bad_rem = bytes([rem[0] | 1])  # 2 x 2 remainder bits, then padding
    for args in [(unary, bad_rem, 8, 2, 2), (b"", b"", 8, 0, 3), (unary, rem, 8, 3, 2),
                 (b"\x01", b"\xff\xff\xff\xfe", 2**32 - 1, 1, 31), (b"\xff", rem, 8, 2, 2),
                 (unary, rem[:0], 8, 2, 2), (unary, rem, 8, 2, 40), (unary, rem, 8, 9, 2)]:
        with pytest.raises(CorruptPayloadError):
            golomb.decode_positions(*args)


@pytest.mark.parametrize("unary,rem,groups,field", [
    (b"\x80", b"\x01", [(8, 1, 3)], "remainders"),  # nonzero padding after the fields
    (b"\x80\x00", b"", [(8, 1, 1)], "unary"),  # a byte after the last code
    (b"\x80", b"", [(8, 2, 1)], "unary"),  # fewer codes than k
    (b"\x00\x00\x00\x01", b"", [(31, 1, 1)], "positions"),  # index 31 >= n
    (b"\x01", b"\xff\xff\xff\xff", [(2**32 - 1, 1, 2**32 - 1)], "positions"),  # overflow
    (b"\x80", b"", [(8, 1, 7)], "remainders"),  # remainder bits missing
])
def test_v2_sections_reject_inconsistent_streams(unary, rem, groups, field):
    with pytest.raises(CorruptPayloadError) as err:
        golomb.decode_sections(unary, rem, groups)
    assert err.value.field == field
