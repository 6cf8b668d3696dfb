"""Issue 13: the lossless sparse broadcast (``compress.sparse_download``) and quantized uploads
(``compress.value_bits``) with error feedback, through the method object the runtimes use."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ecolora.compress import wire
from ecolora.compress.layout import AdapterLayout
from ecolora.config import CompressConfig
from ecolora.errors import ConfigError
from ecolora.methods import ServerState, build_method
from ecolora.runtime.rounds import server_round

LAYOUT = AdapterLayout.from_shapes({
    f"l.{i}.{m}.lora_{ab}.w": (4, 64) if ab == "A" else (64, 4)
    for i in range(2) for m in ("q", "v") for ab in ("A", "B")
})


def _run(cfg: CompressConfig, rounds: int = 4, clients: int = 4):
    """Several rounds of ecolora on random deltas: (final params, download bytes per round)."""
    method = build_method("ecolora", cfg, LAYOUT)
    rng = np.random.default_rng(0)
    params = [rng.normal(size=t.numel).astype(np.float32) for t in LAYOUT.tensors]
    state, residuals, down = ServerState(), {}, []
    for t in range(rounds):
        uploads = []
        for k in range(clients):
            d = [rng.normal(size=t.numel).astype(np.float32) * 1e-3 for t in LAYOUT.tensors]
            up = method.client_update(d, residuals.get(k), k, t)
            residuals[k] = up.residual
            uploads.append((k, up.payload, 1 / clients))
        res = server_round(method, uploads, t, state, params)
        params = res.params
        down.append(len(res.broadcast))
    return params, down


def test_sparse_broadcast_is_bit_identical_and_smaller():
    cfg = CompressConfig(rho_a=0.05, rho_b=0.1, sparse_download=False)
    dense, dense_down = _run(cfg)
    sparse, sparse_down = _run(replace(cfg, sparse_download=True))
    for a, b in zip(dense, sparse, strict=True):
        assert a.tobytes() == b.tobytes()
    assert sum(sparse_down) < 0.6 * sum(dense_down)


def test_sparse_broadcast_falls_back_to_dense_per_tensor():
    method = build_method("ecolora", CompressConfig(sparse_download=True), LAYOUT)
    delta = [np.zeros(t.numel, np.float32) for t in LAYOUT.tensors]
    delta[0][:] = 1.0  # every entry changed: dense is smaller
    delta[1][[3, 100]] = [0.5, -2.0]  # two entries: sparse
    msg = wire.decode(method.encode_broadcast(delta, 0, ServerState()))
    assert msg.records[0].indices is None
    assert msg.records[1].indices.tolist() == [3, 100]
    assert all(r.indices is not None and r.indices.size == 0 for r in msg.records[2:])
    out = method.apply_broadcast(method.encode_broadcast(delta, 0, ServerState()),
                                 [np.zeros_like(d) for d in delta])
    for a, b in zip(out, delta, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_upload_error_goes_to_the_residual(bits):
    cfg = CompressConfig(value_bits=bits, num_segments=1, rho_a=0.5, rho_b=0.5,
                         upload_budget=0.0)  # fixed densities: fewer bits, fewer bytes
    method = build_method("ecolora", cfg, LAYOUT)
    rng = np.random.default_rng(1)
    delta = [rng.normal(size=t.numel).astype(np.float32) for t in LAYOUT.tensors]
    up = method.client_update(delta, None, 0, 0)
    assert up.payload[4] == wire.V3
    update = method.decode_update(up.payload, 0, 0, 1.0)
    got = [np.zeros(t.numel, np.float32) for t in LAYOUT.tensors]
    for piece, idx, vals in update[2]:
        view = got[piece.tensor][piece.start : piece.stop]
        view[idx if idx is not None else slice(None)] = vals
    for d, g, r in zip(delta, got, up.residual, strict=True):
        np.testing.assert_array_equal(g + r, d)  # sent + residual = the whole delta, exactly
    sizes = {b: len(build_method("ecolora", replace(cfg, value_bits=b), LAYOUT)
                    .client_update(delta, None, 0, 0).payload) for b in (16, 8, 4)}
    assert sizes[4] < sizes[8] < sizes[16] and sizes[bits] == len(up.payload)


def test_value_bits_leaves_dense_baselines_and_int32_variants_at_16_bits():
    cfg = CompressConfig(value_bits=8)
    for name in ("fedit", "topk-ef", "eco-no-golomb"):
        assert build_method(name, cfg, LAYOUT).upload_dtype == "fp16"
    assert build_method("ecolora", cfg, LAYOUT).upload_dtype == "q8"
    with pytest.raises(ConfigError, match="value_bits"):
        CompressConfig(value_bits=12)


def test_stochastic_rounding_is_reproducible():
    rng = np.random.default_rng(3)
    delta = [rng.normal(size=t.numel).astype(np.float32) for t in LAYOUT.tensors]

    def values(rounding: str, round_: int) -> np.ndarray:
        cfg = CompressConfig(value_bits=4, value_rounding=rounding, error_feedback=False)
        up = build_method("ecolora", cfg, LAYOUT).client_update(delta, None, 0, round_)
        return np.concatenate([r.values for r in wire.decode(up.payload).records])

    np.testing.assert_array_equal(values("stochastic", 2), values("stochastic", 2))
    assert not np.array_equal(values("stochastic", 0), values("stochastic", 2))  # new draws
    np.testing.assert_array_equal(values("nearest", 0), values("nearest", 2))
