"""Golomb-Rice and wire format: round trips, bit counts near the bound, hostile payloads."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecolora.compress import golomb, wire
from ecolora.errors import CorruptPayloadError


@st.composite
def sparse_ranges(draw):
    n = draw(st.integers(0, 3000))
    k = draw(st.integers(0, n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64) if k else np.zeros(0, "i8")
    vals = rng.normal(size=k).astype(np.float32)
    return n, idx, vals


@settings(max_examples=300, deadline=None)
@given(sparse_ranges(), st.sampled_from(["rice_kiely_floor", "rice_ceil", "empirical_best"]),
       st.sampled_from(["fp16", "bf16", "fp32"]))
def test_payload_round_trip(rng_case, rule, dtype):
    n, idx, vals = rng_case
    rec = wire.Record(3, 7, n, vals, idx)
    dense = wire.Record(1, 0, 5, np.arange(5, dtype=np.float32))
    buf = wire.encode(wire.Payload(wire.KIND_UPDATE, 9, 2, dtype, [rec, dense]), rule)
    out = wire.decode(buf)
    assert (out.kind, out.round, out.segment, out.dtype) == (wire.KIND_UPDATE, 9, 2, dtype)
    got = out.records[0]
    assert (got.tensor, got.start, got.n) == (3, 7, n)
    np.testing.assert_array_equal(got.indices, idx)
    np.testing.assert_array_equal(got.values, wire.round_trip_values(vals, dtype))
    np.testing.assert_array_equal(out.records[1].values, np.arange(5, dtype=np.float32))
    assert out.records[1].indices is None


@pytest.mark.parametrize("n,idx", [(0, []), (1, [0]), (1, []), (10, list(range(10))),
                                   (10, [9]), (10, [0]), (1 << 20, [0, (1 << 20) - 1])])
def test_edge_ranges(n, idx):
    idx = np.array(idx, dtype=np.int64)
    rec = wire.Record(0, 0, n, np.ones(len(idx), np.float32), idx)
    out = wire.decode(wire.encode(wire.Payload(0, 0, 0, "fp16", [rec])))
    np.testing.assert_array_equal(out.records[0].indices, idx)


def test_values_fp32_exact_and_bf16_rounding():
    x = np.array([1.0, -2.5, 3.14159265, 1e-8, 65504.0], dtype=np.float32)
    np.testing.assert_array_equal(wire.round_trip_values(x, "fp32"), x)
    bf = wire.round_trip_values(x, "bf16")
    assert np.all(np.abs(bf - x) <= np.abs(x) * 2**-8)


@pytest.mark.parametrize("p", [0.001, 0.01, 0.1])
def test_position_bits_near_entropy_bound(p):
    """Rice with the empirical parameter stays within 3% of log2 C(n, k) on random masks."""
    n = 200_000
    k = int(p * n)
    idx = np.sort(np.random.default_rng(1).choice(n, size=k, replace=False))
    b = golomb.choose_parameter(n, idx, "empirical_best")
    unary, rem = golomb.encode_positions(idx, b)
    bits = 8 * (len(unary) + len(rem))
    bound = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)
    assert bits <= 1.03 * bound
    assert bits == pytest.approx(golomb.coded_bits(golomb.gaps_of(idx), b), abs=16)


def test_kiely_matches_spec_worked_values():
    # spec §6: p = 0.01 gives b* with ~8.11 bits per position for the floor form
    b = golomb.kiely_parameter(100_000, 1_000)
    expected = b + 1 / (1 - (1 - 0.01) ** (2**b))
    assert expected == pytest.approx(8.11, abs=0.01)


def _payload() -> bytes:
    idx = np.array([2, 5, 11, 40], dtype=np.int64)
    rec = wire.Record(0, 0, 64, np.array([0.5, -1, 2, 3], np.float32), idx)
    return wire.encode(wire.Payload(wire.KIND_UPDATE, 1, 0, "fp16", [rec]))


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("mutate,field", [
    (lambda b: b[:10], "header"),
    (lambda b: b[:-7], "crc32"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: _recrc(b[:4] + bytes([9]) + b[5:-4]), "version"),
    (lambda b: b[:30] + bytes([b[30] ^ 1]) + b[31:], "crc32"),
    (lambda b: _recrc(b[:-4] + b"\x00\x00"), "trailer"),
    (lambda b: _recrc(b[:16] + struct.pack("<I", 10**6) + b[20:-4]), "count"),
    (lambda b: _recrc(b[:20 + 12] + struct.pack("<I", 65) + b[20 + 16 : -4]), "k"),
    (lambda b: _recrc(b[:20 + 8] + struct.pack("<I", 2**31) + b[20 + 12 : -4]), "n"),
    (lambda b: _recrc(b[:-6]), "values"),
])
def test_hostile_payloads_raise_named_error(mutate, field):
    with pytest.raises(CorruptPayloadError) as err:
        wire.decode(mutate(_payload()), max_numel=1 << 20)
    assert err.value.field == field
    assert "\n" not in str(err.value)


def test_nonfinite_values_rejected():
    rec = wire.Record(0, 0, 2, np.array([np.inf, 1], np.float32))
    buf = wire.encode(wire.Payload(0, 0, 0, "fp32", [rec]))
    with pytest.raises(CorruptPayloadError, match="non-finite"):
        wire.decode(buf)
    assert np.isinf(wire.decode(buf, reject_nonfinite=False).records[0].values[0])


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_fuzzed_payloads_only_raise_payload_error(data):
    """Bit flips, truncations and splices: decode returns or raises CorruptPayloadError."""
    buf = bytearray(_payload()[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    body = bytes(buf[:cut]) + data.draw(st.binary(max_size=8))
    try:
        wire.decode(_recrc(body), max_numel=1 << 16)
    except CorruptPayloadError:
        pass


GOLDEN = [
    ("fp16_sparse", wire.Payload(0, 3, 1, "fp16", [
        wire.Record(0, 0, 100, np.array([0.25, -0.5, 1.0], np.float32),
                    np.array([3, 50, 99], np.int64)),
        wire.Record(2, 10, 4, np.array([1, 2, 3, 4], np.float32))])),
    ("bf16_broadcast", wire.Payload(1, 0, wire.ALL_SEGMENTS, "bf16", [
        wire.Record(1, 0, 3, np.array([1.5, -2.0, 0.0], np.float32))])),
]


@pytest.mark.parametrize("name,payload", GOLDEN)
def test_golden_payloads_still_decode(name, payload, request):
    """Committed v1 payloads must decode forever (numcodecs' backwards-compatibility check)."""
    path = request.path.parent / "fixtures" / "wire" / "v1" / f"{name}.bin"
    assert path.read_bytes() == wire.encode(payload), "format v1 bytes changed"
    out = wire.decode(path.read_bytes())
    for a, b in zip(out.records, payload.records, strict=True):
        np.testing.assert_array_equal(a.values, b.values)
        assert (a.indices is None) == (b.indices is None)
