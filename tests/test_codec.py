"""Golomb/Rice coding and the wire format: round trips, bits near the bound, hostile payloads,
golden payloads of every format version."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecolora.compress import bitpack, golomb, golomb_search, wire
from ecolora.errors import CorruptPayloadError

RULES = ["rice_kiely_floor", "rice_ceil", "empirical_best"]


def log2_binom(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


@st.composite
def sparse_ranges(draw):
    n = draw(st.integers(1, 3000))
    k = draw(st.integers(0, n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    idx = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    if draw(st.booleans()) and k:  # clustered: runs of consecutive kept entries
        starts = np.sort(rng.choice(n, size=max(1, k // 8), replace=False))
        idx = np.unique(np.minimum(starts[:, None] + np.arange(8)[None, :], n - 1))[:k]
    return n, idx, rng.normal(size=idx.size).astype(np.float32)


@settings(max_examples=300, deadline=None)
@given(sparse_ranges(), st.sampled_from(RULES), st.sampled_from(["fp16", "bf16", "fp32"]),
       st.sampled_from([wire.V1, wire.V2]))
def test_payload_round_trip(rng_case, rule, dtype, version):
    n, idx, vals = rng_case
    rec = wire.Record(3, 7, n, vals, idx)
    dense = wire.Record(1, 0, 5, np.arange(5, dtype=np.float32))
    empty = wire.Record(2, 2**32 - 1, 9, np.zeros(0, np.float32), np.zeros(0, np.int64))
    payload = wire.Payload(wire.KIND_UPDATE, 9, 2, dtype, [rec, dense, empty], version)
    out = wire.decode(wire.encode(payload, rule))
    assert (out.kind, out.round, out.segment, out.dtype, out.version) == (0, 9, 2, dtype, version)
    got = out.records[0]
    assert (got.tensor, got.start, got.n) == (3, 7, n)
    np.testing.assert_array_equal(got.indices, idx)
    np.testing.assert_array_equal(got.values, wire.round_trip_values(vals, dtype))
    np.testing.assert_array_equal(out.records[1].values, np.arange(5, dtype=np.float32))
    assert out.records[1].indices is None
    assert out.records[2].indices.size == 0 and out.records[2].start == 2**32 - 1


@pytest.mark.parametrize("version", [wire.V1, wire.V2])
@pytest.mark.parametrize("n,idx", [(1, [0]), (1, []), (10, list(range(10))),
                                   (10, [9]), (10, [0]), (1 << 20, [0, (1 << 20) - 1]),
                                   (2**32 - 1, [2**32 - 2])])
def test_edge_ranges(n, idx, version):
    idx = np.array(idx, dtype=np.int64)
    rec = wire.Record(0, 0, n, np.ones(len(idx), np.float32), idx)
    out = wire.decode(wire.encode(wire.Payload(0, 0, 0, "fp16", [rec], version)), 2**32)
    np.testing.assert_array_equal(out.records[0].indices, idx)


def test_encoder_refuses_bad_records():
    for rec in [wire.Record(0, 0, 4, np.ones(2, np.float32), np.array([2, 1])),  # unsorted
                wire.Record(0, 0, 4, np.ones(2, np.float32), np.array([1, 1])),  # duplicate
                wire.Record(0, 0, 4, np.ones(1, np.float32), np.array([4])),  # out of range
                wire.Record(0, 0, 4, np.ones(3, np.float32))]:  # dense with k != n
        with pytest.raises(ValueError):
            wire.encode(wire.Payload(0, 0, 0, "fp16", [rec]))
    rec = wire.Record(0, 0, 4, np.ones(1, np.float32), np.array([1]))
    with pytest.raises(ValueError):
        wire.encode(wire.Payload(0, 0, 0, "fp16", [rec]), params=[5])  # M > n


def test_values_fp32_exact_and_bf16_rounding():
    x = np.array([1.0, -2.5, 3.14159265, 1e-8, 65504.0], dtype=np.float32)
    np.testing.assert_array_equal(wire.round_trip_values(x, "fp32"), x)
    bf = wire.round_trip_values(x, "bf16")
    assert np.all(np.abs(bf - x) <= np.abs(x) * 2**-8)


def _v2_position_bits(tensors: list[tuple[int, np.ndarray]]) -> tuple[int, int]:
    """(position stream bits, + the sparse-only header varints) of a v2 payload."""
    ns = [n for n, _ in tensors]
    gaps, ks = golomb.gaps_of_many([idx for _, idx in tensors])
    ms = golomb_search.choose_golombs(ns, gaps, ks, "empirical_best")
    head = bytearray()
    for n, k, m in zip(ns, ks.tolist(), ms, strict=True):
        bitpack.put_varint(head, k + 1)
        bitpack.put_varint(head, bitpack.zigzag(m - golomb.golomb_reference(n, k)))
    unary, rem = golomb.encode_sections(gaps, ks, ms)
    bitpack.put_varint(head, len(unary))
    assert all(np.array_equal(a, idx) for a, (_, idx) in zip(golomb.decode_sections(
        unary, rem, list(zip(ns, ks.tolist(), ms, strict=True))), tensors, strict=True))
    return 8 * (len(unary) + len(rem)), 8 * (len(unary) + len(rem) + len(head))


@pytest.mark.parametrize("p", [0.001, 0.01, 0.1])
def test_position_bits_near_entropy_bound_random(p):
    """Random masks, 4 tensors of 65,536: v2 <= 1.03 x sum log2 C(n, k), headers included."""
    rng = np.random.default_rng(1)
    n, k = 1 << 16, math.ceil(p * (1 << 16))
    tensors = [(n, np.sort(rng.choice(n, size=k, replace=False))) for _ in range(4)]
    bound = sum(log2_binom(n, idx.size) for n, idx in tensors)
    pos, with_header = _v2_position_bits(tensors)
    assert pos <= with_header <= 1.03 * bound
    assert pos <= 1.015 * bound


@pytest.mark.parametrize("p", [0.001, 0.01, 0.1])
def test_position_bits_near_entropy_bound_clustered(p):
    """Top-k of a LoRA-like delta (rows and columns with very different scales): clustered
    masks, on which Rice was 2-4% over the bound; the tuned Golomb parameter stays <= 1.03."""
    rng = np.random.default_rng(2)
    tensors = []
    for _ in range(4):
        rows = rng.lognormal(0.0, 1.5, 4096)[:, None] * rng.lognormal(0.0, 0.7, 16)[None, :]
        x = (rows * rng.standard_normal((4096, 16))).ravel()
        k = math.ceil(p * x.size)
        tensors.append((x.size, np.sort(np.argsort(-np.abs(x), kind="stable")[:k])))
    bound = sum(log2_binom(n, idx.size) for n, idx in tensors)
    pos, _ = _v2_position_bits(tensors)
    assert pos <= 1.03 * bound


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 2**32 - 1), st.floats(0.0005, 0.6))
def test_golomb_search_never_worse_than_v1_rice(n, seed, p):
    rng = np.random.default_rng(seed)
    k = max(1, min(n, round(p * n)))
    idx = np.sort(rng.choice(n, size=k, replace=False))
    gaps = golomb.gaps_of(idx)
    m = golomb_search.choose_golomb(n, idx, "empirical_best")
    b = golomb.choose_parameter(n, idx, "empirical_best")
    assert 1 <= m <= n
    assert golomb_search.golomb_costs(gaps, np.array([m]))[0] <= golomb.coded_bits(gaps, b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=300),
       st.lists(st.integers(1, 5000), min_size=1, max_size=20))
def test_golomb_costs_match_the_streams(gaps, ms):
    """The cost model the search minimises is exactly what the encoder writes."""
    gaps = np.array(gaps, dtype=np.int64)
    costs = golomb_search.golomb_costs(gaps, np.array(ms))
    for m, cost in zip(ms, costs, strict=True):
        q, bits = golomb.golomb_split(gaps, m)
        assert cost == int(q.sum()) + q.size + bits.size


def test_kiely_matches_spec_worked_values():
    # spec §6: p = 0.01 gives b* with ~8.11 bits per position for the floor form
    b = golomb.kiely_parameter(100_000, 1_000)
    expected = b + 1 / (1 - (1 - 0.01) ** (2**b))
    assert expected == pytest.approx(8.11, abs=0.01)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32 - 1, 2**35 - 1])
def test_varints_round_trip_and_reject_non_canonical(value):
    out = bytearray()
    bitpack.put_varint(out, value)
    assert bitpack.get_varint(bytes(out), 0, len(out), "f", value) == (value, len(out))
    with pytest.raises(CorruptPayloadError, match="limit"):
        bitpack.get_varint(bytes(out), 0, len(out), "f", value - 1) if value else \
            bitpack.get_varint(b"\x01", 0, 1, "f", 0)
    longer = bytes(out[:-1]) + bytes([out[-1] | 0x80, 0])
    with pytest.raises(CorruptPayloadError):
        bitpack.get_varint(longer, 0, len(longer), "f", 2**35)
    with pytest.raises(CorruptPayloadError, match="truncated|longer than"):
        bitpack.get_varint(bytes(out[:-1]) + b"\x80", 0, len(out), "f", 2**35)
    assert bitpack.unzigzag(bitpack.zigzag(value)) == value
    assert bitpack.unzigzag(bitpack.zigzag(-value)) == -value


# ---- hostile payloads: each raises the one documented error, naming the field -------------

def _v1_payload() -> bytes:
    idx = np.array([2, 5, 11, 40], dtype=np.int64)
    rec = wire.Record(0, 0, 64, np.array([0.5, -1, 2, 3], np.float32), idx)
    return wire.encode(wire.Payload(wire.KIND_UPDATE, 1, 0, "fp16", [rec], wire.V1))


def _v2_payload() -> bytes:
    """Bytes 20-24: tensor 0 | start 0 | n 64 | kk 5 | m; 25: unary_nbytes 2; 26-27 unary;
    28-29 remainders (9 bits); 30-37 values; 38-41 crc."""
    idx = np.array([2, 5, 11, 40], dtype=np.int64)
    rec = wire.Record(0, 0, 64, np.array([0.5, -1, 2, 3], np.float32), idx)
    buf = wire.encode(wire.Payload(wire.KIND_UPDATE, 1, 0, "fp16", [rec]), params=[5],
                      compress_values=False)
    assert buf[20:26] == bytes([0, 0, 64, 5, 9, 2]) and len(buf) == 42
    return buf


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _at(b: bytes, pos: int, new: bytes) -> bytes:
    """Replace bytes at ``pos`` and recompute the CRC."""
    return _recrc(b[:pos] + new + b[pos + len(new) : -4])


@pytest.mark.parametrize("mutate,field", [
    (lambda b: b[:10], "header"),
    (lambda b: b[:-7], "crc32"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: _at(b, 4, bytes([9])), "version"),
    (lambda b: _at(b, 5, bytes([2])), "kind"),
    (lambda b: _at(b, 6, bytes([3])), "dtype"),
    (lambda b: _at(b, 7, bytes([1])), "flags"),
    (lambda b: _at(b, 14, bytes([1])), "reserved"),
    (lambda b: b[:30] + bytes([b[30] ^ 1]) + b[31:], "crc32"),
    (lambda b: _recrc(b[:-4] + b"\x00\x00"), "trailer"),
    (lambda b: _at(b, 16, struct.pack("<I", 10**6)), "count"),
    (lambda b: _at(b, 20 + 12, struct.pack("<I", 65)), "k"),
    (lambda b: _at(b, 20 + 8, struct.pack("<I", 2**31)), "n"),
    (lambda b: _at(b, 20 + 17, bytes([32])), "rice_b"),
    (lambda b: _at(b, 20 + 16, bytes([7])), "coding"),
    (lambda b: _recrc(b[:-6]), "values"),
])
def test_hostile_v1_payloads_raise_named_error(mutate, field):
    with pytest.raises(CorruptPayloadError) as err:
        wire.decode(mutate(_v1_payload()), max_numel=1 << 20)
    assert err.value.field == field
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("mutate,field", [
    (lambda b: _at(b, 4, bytes([4])), "version"),  # v3 exists since issue 13
    (lambda b: _at(b, 14, bytes([1])), "reserved"),
    (lambda b: _at(b, 16, struct.pack("<I", 10**6)), "count"),
    (lambda b: _at(b, 22, b"\xff\xff\xff\xff\x0f"), "n"),  # 2**32 - 1 > max_numel
    (lambda b: _at(b, 22, b"\x80\x00"), "n"),  # non-canonical varint
    (lambda b: _at(b, 23, bytes([66])), "k"),  # k = 65 > n = 64
    (lambda b: _at(b, 24, bytes([0x7F])), "golomb_m"),  # M = 10 - 64 < 1
    (lambda b: _at(b, 24, bytes([0x7E])), "golomb_m"),  # M = 10 + 63 > n
    (lambda b: _at(b, 25, bytes([0x7F])), "unary_nbytes"),  # more than the bytes left
    (lambda b: _at(b, 25, bytes([12])), "values"),  # unary + values overrun the payload
    (lambda b: _at(b, 25, bytes([1])), "unary"),  # one unary byte: 3 codes, not 4
    (lambda b: _at(b, 27, bytes([b[27] | 1])), "unary"),  # a fifth code
    (lambda b: _at(b, 29, bytes([b[29] | 1])), "remainders"),  # padding bit set
    (lambda b: _recrc(b[:-6]), "remainders"),  # a value byte short: remainders shift
    (lambda b: _recrc(b[:-4] + b"\x00\x00"), "remainders"),  # trailing bytes
    (lambda b: _recrc(b[:24]), "golomb_m"),  # truncated inside the record header
    (lambda b: _recrc(b[:21]), "count"),  # too short for even one record header
    (lambda b: _at(b, 30, b"\x00\x7c"), "values"),  # fp16 +inf
])
def test_hostile_v2_payloads_raise_named_error(mutate, field):
    with pytest.raises(CorruptPayloadError) as err:
        wire.decode(mutate(_v2_payload()), max_numel=1 << 20)
    assert err.value.field == field
    assert "\n" not in str(err.value)


def _deflate_payload() -> bytes:
    """Header 20 | tensor 3, start 0, n 1000, kk 65, m | unary_nbytes | values_nbytes | unary |
    remainders | DEFLATE of the 64 high bytes | the 64 low bytes | crc."""
    buf = wire.encode(GOLDEN_V2_DEFLATE[0][1], params=[10])
    assert buf[7] == wire.VALUES_DEFLATE and buf[20:25] == bytes([3, 0, 0xE8, 7, 65])
    return buf


def test_deflate_values_are_bounded_and_checked():
    buf = _deflate_payload()
    _, vn_at = bitpack.get_varint(buf, 26, len(buf), "u", 1 << 20)
    packed, _ = bitpack.get_varint(buf, vn_at, len(buf), "v", 1 << 20)
    assert 64 <= 8 * packed and packed < 64  # the rule: smaller, but at most 8x smaller
    last = len(buf) - 4 - 64 - 1  # last byte of the DEFLATE stream
    cases = [
        (_at(buf, vn_at, bytes([2])), "values_nbytes"),  # 64 high bytes from 2: > 8x
        (_at(buf, vn_at, bytes([64])), "values_nbytes"),  # not smaller than stored planes
        (_at(buf, last - packed + 1, b"\xff\xff"), "values"),  # not a DEFLATE stream
        (_at(buf, last, bytes([buf[last] ^ 0x10])), "values"),  # wrong data or length
        (_at(buf, 4, bytes([wire.V1])), None),  # the flag does not exist in v1
        (_at(buf, 7, bytes([3])), "flags"),
    ]
    for bad, field in cases:
        with pytest.raises(CorruptPayloadError) as err:
            wire.decode(bad)
        assert field is None or err.value.field == field
    wire.decode(buf)
    # values whose exponent bytes DEFLATE cannot shrink, or shrinks more than 8x, stay plain
    noise = wire.Record(0, 0, 4, np.array([0.1, -7.3, 1e4, 3e-5], np.float32))
    zeros = wire.Record(0, 0, 4096, np.zeros(4096, np.float32))
    for rec in (noise, zeros):
        assert wire.encode(wire.Payload(0, 0, 0, "fp16", [rec]))[7] == 0


@pytest.mark.parametrize("version", [wire.V1, wire.V2])
def test_nonfinite_values_rejected(version):
    rec = wire.Record(0, 0, 2, np.array([np.inf, 1], np.float32))
    buf = wire.encode(wire.Payload(0, 0, 0, "fp32", [rec], version))
    with pytest.raises(CorruptPayloadError, match="non-finite"):
        wire.decode(buf)
    assert np.isinf(wire.decode(buf, reject_nonfinite=False).records[0].values[0])


# ---- golden payloads: committed bytes must decode forever, in every version ---------------

GOLDEN = [
    ("fp16_sparse", wire.Payload(0, 3, 1, "fp16", [
        wire.Record(0, 0, 100, np.array([0.25, -0.5, 1.0], np.float32),
                    np.array([3, 50, 99], np.int64)),
        wire.Record(2, 10, 4, np.array([1, 2, 3, 4], np.float32))])),
    ("bf16_broadcast", wire.Payload(1, 0, wire.ALL_SEGMENTS, "bf16", [
        wire.Record(1, 0, 3, np.array([1.5, -2.0, 0.0], np.float32))])),
]
GOLDEN_V2 = GOLDEN + [
    ("fp32_mixed", wire.Payload(0, 7, 2, "fp32", [
        wire.Record(5, 300, 70_000, np.array([1e-3, -2.0, 3.5, 0.125], np.float32),
                    np.array([0, 129, 130, 69_999], np.int64)),
        wire.Record(6, 0, 50, np.zeros(0, np.float32), np.zeros(0, np.int64)),
        wire.Record(7, 2**32 - 1, 1, np.array([-1.0], np.float32), np.array([0])),
        wire.Record(8, 0, 2, np.array([4.0, 5.0], np.float32))])),
]
_I = np.arange(64)
GOLDEN_V2_DEFLATE = [  # values in one binade, as top-k values are: their exponent bytes repeat
    ("fp16_deflate", wire.Payload(0, 4, 0, "fp16", [
        wire.Record(3, 0, 1000, ((-1.0) ** _I * (0.5 + (_I * 37 % 64) / 128)).astype(np.float32),
                    (_I * 15 + _I * 7 % 11).astype(np.int64))])),
]
GOLDEN_V2_PARAMS = {"fp16_sparse": [21], "bf16_broadcast": [], "fp32_mixed": [11_000, 1],
                    "fp16_deflate": [10]}


def _check_decoded(out: wire.Payload, payload: wire.Payload, version: int) -> None:
    assert out.version == version
    assert (out.kind, out.round, out.segment, out.dtype) == (
        payload.kind, payload.round, payload.segment, payload.dtype)
    for a, b in zip(out.records, payload.records, strict=True):
        assert (a.tensor, a.start, a.n) == (b.tensor, b.start, b.n)
        np.testing.assert_array_equal(a.values, wire.round_trip_values(b.values, out.dtype))
        assert (a.indices is None) == (b.indices is None)
        if a.indices is not None:
            np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize("name,payload", GOLDEN)
def test_golden_v1_payloads_still_decode(name, payload, request):
    """Committed v1 payloads decode forever (numcodecs' backwards-compatibility check), and
    v1 can still be written bit-identically on request."""
    path = request.path.parent / "fixtures" / "wire" / "v1" / f"{name}.bin"
    v1 = wire.Payload(payload.kind, payload.round, payload.segment, payload.dtype,
                      payload.records, wire.V1)
    assert path.read_bytes() == wire.encode(v1), "format v1 bytes changed"
    _check_decoded(wire.decode(path.read_bytes()), payload, wire.V1)


@pytest.mark.parametrize("name,payload,deflate", [(*g, False) for g in GOLDEN_V2]
                         + [(*g, True) for g in GOLDEN_V2_DEFLATE])
def test_golden_v2_payloads_still_decode(name, payload, deflate, request):
    """Committed v2 payloads, written with pinned Golomb parameters so that a better parameter
    search does not count as a format change."""
    path = request.path.parent / "fixtures" / "wire" / "v2" / f"{name}.bin"
    buf = path.read_bytes()
    assert buf[7] == (wire.VALUES_DEFLATE if deflate else 0)
    assert buf == wire.encode(payload, params=GOLDEN_V2_PARAMS[name], compress_values=deflate), \
        "format v2 bytes changed"
    _check_decoded(wire.decode(buf), payload, wire.V2)
    _check_decoded(wire.decode(wire.encode(payload)), payload, wire.V2)
