"""Codec defects D1-D3 of issue 13: huge valid payloads, bf16 NaN, fp16 overflow."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from ecolora.compress import bitpack, wire
from ecolora.errors import CorruptPayloadError

# ---- issue 13: D1 (huge valid payloads), D2 (bf16 NaN), D3 (fp16 overflow) ---------------

def _many_records(n_records: int, n: int) -> bytes:
    """A v2 payload of ``n_records`` dense records of n entries, built directly (fast)."""
    head = bytearray()
    for t in range(n_records):
        for field in (t % 7, 0, n, 0):
            bitpack.put_varint(head, field)
    bitpack.put_varint(head, 0)  # unary_nbytes
    body = wire._HEADER.pack(wire.MAGIC, 2, 0, 0, 0, 0, 0, 0, n_records) + bytes(head)
    body += bytes(2 * n * n_records)
    return body + struct.pack("<I", zlib.crc32(body))


def test_zero_length_records_rejected_and_never_written():
    buf = _many_records(3, 0)
    with pytest.raises(CorruptPayloadError, match="field 'n'.*outside"):
        wire.decode(buf)
    for version in (wire.V1, wire.V2):
        with pytest.raises(ValueError):
            wire.encode(wire.Payload(0, 0, 0, "fp16", [wire.Record(0, 0, 0, np.zeros(0))],
                                     version))


def test_record_count_capped_by_the_layout():
    """D1: a receiver that knows the layout rejects a huge record count before parsing any
    record: 1M valid one-entry records (7 MB) fail at once instead of after ~25 s."""
    import time

    buf = _many_records(1_000_000, 1)
    t0 = time.perf_counter()
    with pytest.raises(CorruptPayloadError, match="field 'count'.*at most 64"):
        wire.decode(buf, max_records=64)
    assert time.perf_counter() - t0 < 0.1
    small = _many_records(64, 1)
    assert len(wire.decode(small, max_records=64).records) == 64  # at the cap: accepted


def test_bf16_nan_and_inf_never_become_finite():
    """D2: every NaN pattern (the rounding carry used to turn 0x7FFF8000.. into -0.0 and
    0x7F800001 into +Inf) stays NaN; Inf stays Inf; both reject the payload."""
    bits = np.array([0x7FFF8000, 0x7FFFFFFF, 0xFFFF8000, 0xFFFFFFFF, 0x7F800001, 0xFF800001,
                     0x7FC00000], np.uint32)
    out = wire.round_trip_values(bits.view(np.float32), "bf16")
    assert np.isnan(out).all()
    inf = wire.round_trip_values(np.array([np.inf, -np.inf], np.float32), "bf16")
    np.testing.assert_array_equal(inf, [np.inf, -np.inf])
    for x in (bits.view(np.float32)[:1], np.array([np.inf], np.float32)):
        buf = wire.encode(wire.Payload(0, 0, 0, "bf16", [wire.Record(0, 0, 1, x)]))
        with pytest.raises(CorruptPayloadError, match="non-finite"):
            wire.decode(buf)


def test_bf16_finite_overflow_clamps_and_rounding_unchanged():
    big = np.array([0x7F7FFFFF, 0xFF7FFFFF], np.uint32).view(np.float32)  # round up to Inf
    out = wire.round_trip_values(big, "bf16")
    assert np.isfinite(out).all() and (np.abs(out) == np.float32(3.3895314e38)).all()
    rng = np.random.default_rng(0)
    x = (rng.normal(size=10_000) * 10.0 ** rng.integers(-30, 30, 10_000)).astype(np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    expected = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32) << 16
    np.testing.assert_array_equal(wire.round_trip_values(x, "bf16").view(np.uint32), expected)


def test_fp16_overflow_clamped_without_warning():
    """D3: |x| >= 65520 used to become ±Inf (a RuntimeWarning, then the whole payload was
    rejected); it is clamped to ±65504, which error feedback sees as a residual."""
    import warnings

    x = np.array([65519.0, 65520.0, -1e6, 3e38, np.inf, -np.inf, np.nan], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = wire.round_trip_values(x, "fp16")
    np.testing.assert_array_equal(out[:4], [65504, 65504, -65504, 65504])
    assert out[4] == np.inf and out[5] == -np.inf and np.isnan(out[6])
    buf = wire.encode(wire.Payload(0, 0, 0, "fp16", [wire.Record(0, 0, 4, x[:4])]))
    np.testing.assert_array_equal(wire.decode(buf).records[0].values, out[:4])
