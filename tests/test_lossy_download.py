"""Issue 13: the budgeted lossy broadcast (``compress.download_budget``/``download_bits``) with
server-side error feedback, the model the server evaluates (``served_model``) and the sparse
full state, through the method object the runtimes use."""

from __future__ import annotations

import numpy as np
import pytest

from ecolora.compress import wire
from ecolora.compress.layout import AdapterLayout
from ecolora.compress.sparsify import DENSE_BITS
from ecolora.config import CompressConfig
from ecolora.errors import ConfigError
from ecolora.methods import ServerState, build_method

LAYOUT = AdapterLayout.from_shapes({
    f"l.{i}.{m}.lora_{ab}.w": (8, 128) if ab == "A" else (128, 8)
    for i in range(2) for m in ("q", "v") for ab in ("A", "B")
})


def _delta(seed: int, scale_b: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=t.numel).astype(np.float32) * (scale_b if t.kind == "B" else 1.0)
            for t in LAYOUT.tensors]


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_budgeted_broadcast_fits_the_budget_and_the_residual_keeps_the_rest(bits):
    """Copy + server residual is exactly the sum of the global steps (model-space EF), and each
    broadcast's bytes stay under download_budget x FedIT's dense 16-bit download."""
    budget = 0.05
    cfg = CompressConfig(compress_download=True, download_budget=budget, download_bits=bits)
    method = build_method("ecolora", cfg, LAYOUT)
    state = ServerState()
    copy = [np.zeros(t.numel, np.float32) for t in LAYOUT.tensors]
    total = [np.zeros(t.numel, np.float64) for t in LAYOUT.tensors]
    allowed = budget * DENSE_BITS * LAYOUT.numel / 8 + wire.FRAME_BYTES
    for t in range(3):
        d = _delta(t)
        total = [a + b for a, b in zip(total, d, strict=True)]
        payload = method.encode_broadcast(d, t, state)
        assert len(payload) <= allowed
        msg = wire.decode(payload)
        assert msg.dtype == ("fp16" if bits == 16 else f"q{bits}")
        sent = sum(r.n if r.indices is None else r.indices.size for r in msg.records)
        assert 0 < sent < LAYOUT.numel // 4
        copy = method.apply_broadcast(payload, copy)
        for c, r, s in zip(copy, state.residual, total, strict=True):
            np.testing.assert_allclose(c + r, s, rtol=0, atol=1e-5)


def test_budgeted_broadcast_pools_the_top_k_over_every_tensor():
    """One tensor holding the largest changes takes the whole budget (pooled, not per tensor)."""
    cfg = CompressConfig(compress_download=True, download_budget=0.02, download_bits=8)
    method = build_method("ecolora", cfg, LAYOUT)
    d = _delta(1, scale_b=1e-3)
    d[0] *= 1e3  # the first A tensor dominates
    msg = wire.decode(method.encode_broadcast(d, 0, ServerState()))
    counts = [r.n if r.indices is None else r.indices.size for r in msg.records]
    assert counts[0] > 0 and sum(counts[1:]) == 0


def test_a_budget_that_covers_the_change_is_lossless():
    cfg = CompressConfig(compress_download=True, download_budget=0.5, download_bits=16)
    method = build_method("ecolora", cfg, LAYOUT)
    d = [np.zeros(t.numel, np.float32) for t in LAYOUT.tensors]
    d[2][[5, 9]] = [0.25, -1.5]  # exact in fp16
    state = ServerState()
    out = method.apply_broadcast(method.encode_broadcast(d, 0, state),
                                 [np.zeros_like(x) for x in d])
    for a, b in zip(out, d, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not any(r.any() for r in state.residual)


@pytest.mark.parametrize("served", ["clients", "server"])
def test_served_model_is_the_copy_or_the_copy_plus_the_residual(served):
    cfg = CompressConfig(compress_download=True, download_budget=0.02, served_model=served)
    method = build_method("ecolora", cfg, LAYOUT)
    state = ServerState()
    d = _delta(2)
    copy = method.apply_broadcast(method.encode_broadcast(d, 0, state),
                                  [np.zeros(t.numel, np.float32) for t in LAYOUT.tensors])
    got = method.server_model(copy, state)
    want = copy if served == "clients" else [c + r for c, r in zip(copy, state.residual,
                                                                   strict=True)]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    if served == "server":
        for a, b in zip(got, d, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
    # a lossless broadcast leaves no residual: the served model is the copy under either knob
    plain = build_method("ecolora", CompressConfig(served_model=served), LAYOUT)
    assert plain.server_model(copy, ServerState()) is copy


def test_full_state_sends_zero_tensors_as_positions_and_keeps_every_bit():
    method = build_method("ecolora", CompressConfig(), LAYOUT)
    rng = np.random.default_rng(3)
    params = [rng.normal(size=t.numel).astype(np.float32) if t.kind == "A"
              else np.zeros(t.numel, np.float32) for t in LAYOUT.tensors]
    params[1][7] = -0.0  # a negative zero is a bit pattern the receiver must rebuild
    params[3][[0, 11]] = [1.5, -2.25]
    payload = method.encode_full_state(params, 0)
    dense_a = sum(4 * t.numel for t in LAYOUT.tensors if t.kind == "A")
    assert len(payload) < dense_a + 200  # the B tensors cost almost nothing
    out = method.apply_broadcast(payload, [np.ones_like(p) for p in params], replace=True)
    for a, b in zip(out, params, strict=True):
        assert a.tobytes() == b.tobytes()


def test_download_knobs_are_checked():
    with pytest.raises(ConfigError, match="download_bits"):
        CompressConfig(download_bits=6)
    with pytest.raises(ConfigError, match="download_budget"):
        CompressConfig(download_budget=1.5)
    with pytest.raises(ConfigError, match="served_model"):
        CompressConfig(served_model="both")
