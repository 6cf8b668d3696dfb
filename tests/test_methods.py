"""Methods as pure functions: aggregation closed forms, error feedback, FedIT equivalence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ecolora.compress.layout import AdapterLayout
from ecolora.config import CompressConfig
from ecolora.errors import CorruptPayloadError
from ecolora.methods import ServerState, build_method
from ecolora.runtime.rounds import server_round

#: fixed densities, fp16 values and FedIT's server step (the defaults: a bytes budget, 8-bit
#: values, step 2)
FIXED = dict(upload_budget=0.0, server_lr=1.0, value_bits=16)

LAYOUT = AdapterLayout.from_shapes({
    "l.0.q.lora_A.w": (2, 6), "l.0.q.lora_B.w": (6, 2),
    "l.1.q.lora_A.w": (2, 6), "l.1.q.lora_B.w": (6, 2),
})


def deltas(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=t.numel).astype(np.float32) for t in LAYOUT.tensors]


def run_round(method, client_deltas, weights, round_=0, residuals=None):
    uploads = []
    for k, d in enumerate(client_deltas):
        up = method.client_update(d, (residuals or {}).get(k), k, round_)
        uploads.append((k, up.payload, weights[k]))
    zero = [np.zeros(t.numel, np.float32) for t in LAYOUT.tensors]
    return server_round(method, uploads, round_, ServerState(), zero)


def test_fedit_is_weighted_mean_of_fp16_deltas():
    method = build_method("fedit", CompressConfig(), LAYOUT)
    d0, d1 = deltas(0), deltas(1)
    res = run_round(method, [d0, d1], [1 / 3, 2 / 3])
    for got, a, b in zip(res.params, d0, d1, strict=True):
        f16 = lambda x: x.astype(np.float16).astype(np.float32)  # noqa: E731
        np.testing.assert_allclose(got, f16((f16(a) * 1 + f16(b) * 2) / 3), rtol=1e-6)


def test_ecolora_s1_dense_no_ef_equals_fedit():
    cfg = CompressConfig(**FIXED, num_segments=1, rho_a=1.0, rho_b=1.0, error_feedback=False)
    eco = build_method("ecolora", cfg, LAYOUT)
    fed = build_method("fedit", CompressConfig(), LAYOUT)
    ds = [deltas(i) for i in range(3)]
    w = [0.2, 0.3, 0.5]
    a, b = run_round(eco, ds, w), run_round(fed, ds, w)
    for x, y in zip(a.params, b.params, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-7)
    assert a.broadcast == b.broadcast


def test_unuploaded_segment_keeps_previous_value():
    cfg = CompressConfig(**FIXED, num_segments=2, rho_a=1.0, rho_b=1.0, error_feedback=False)
    method = build_method("ecolora", cfg, LAYOUT)
    res = run_round(method, [deltas(0)], [1.0])  # client 0, round 0 -> segment 0 only
    seg1 = method.segments[1]
    for p in seg1:
        assert not res.params[p.tensor][p.start : p.stop].any()
    for p in method.segments[0]:
        assert res.params[p.tensor][p.start : p.stop].any()


def test_segment_mean_over_its_uploaders():
    cfg = CompressConfig(**FIXED, num_segments=2, rho_a=1.0, rho_b=1.0, error_feedback=False,
                         value_dtype="fp32")
    method = build_method("ecolora", cfg, LAYOUT)
    ds = [deltas(i) for i in range(4)]  # clients 0,2 send segment 0; 1,3 send segment 1
    res = run_round(method, ds, [0.1, 0.2, 0.3, 0.4])
    for s, (a, b) in enumerate([(0, 2), (1, 3)]):
        wa, wb = [0.1, 0.2, 0.3, 0.4][a], [0.1, 0.2, 0.3, 0.4][b]
        for p in method.segments[s]:
            want = (wa * ds[a][p.tensor] + wb * ds[b][p.tensor]) / (wa + wb)
            np.testing.assert_allclose(res.params[p.tensor], want, rtol=1e-5)


def test_senders_weight_is_mean_over_the_clients_that_sent_each_entry():
    from ecolora.compress.segments import Piece
    from ecolora.methods.aggregate import aggregate_segments

    piece = Piece(tensor=0, start=0, stop=4)
    ups = [  # client a sends entries 0,1; client b sends entries 1,2; entry 3 nobody
        (0, 0.25, [(piece, np.array([0, 1]), np.array([4.0, 8.0], np.float32))]),
        (0, 0.75, [(piece, np.array([1, 2]), np.array([4.0, 2.0], np.float32))]),
    ]
    got = aggregate_segments(ups, [[piece]], [4], "senders_weight")[0]
    np.testing.assert_allclose(got, [4.0, 0.25 * 8 + 0.75 * 4, 2.0, 0.0])
    # the default divides by both uploaders' weight: unsent entries count as zero
    got = aggregate_segments(ups, [[piece]], [4], "uploaders_weight")[0]
    np.testing.assert_allclose(got, [1.0, 5.0, 1.5, 0.0])


def test_error_feedback_loses_nothing():
    """Sum of what was sent over rounds + final residual == sum of local deltas (fp32 values)."""
    cfg = CompressConfig(num_segments=2, rho_a=0.1, rho_b=0.3, value_dtype="fp32",
                         residual_scope="all_untransmitted")
    method = build_method("ecolora", cfg, LAYOUT)
    residual, sent_total = None, [np.zeros(t.numel, np.float32) for t in LAYOUT.tensors]
    local_total = [np.zeros_like(s) for s in sent_total]
    for t in range(6):
        d = deltas(10 + t)
        up = method.client_update(d, residual, 0, t)
        residual = up.residual
        _, _, recs = method.decode_update(up.payload, 0, t, 1.0)
        for piece, idx, vals in recs:
            view = sent_total[piece.tensor][piece.start : piece.stop]
            if idx is None:
                view += vals
            else:
                view[idx] += vals
        local_total = [a + b for a, b in zip(local_total, d, strict=True)]
    for s, r, want in zip(sent_total, residual, local_total, strict=True):
        np.testing.assert_allclose(s + r, want, atol=1e-5)


@pytest.mark.parametrize("stale", [0.0, 0.5, 1.0])
def test_stale_residual_is_scaled_per_missed_round(stale):
    """A client back after missing rounds sends as if its residual were ``stale ** missed`` of
    what it kept; with no missed round (full participation) the knob changes nothing."""
    cfg = CompressConfig(num_segments=2, rho_a=0.1, rho_b=0.3, value_dtype="fp32",
                         stale_decay=stale, stale_clip=0.0)
    method = build_method("ecolora", cfg, LAYOUT)
    residual = method.client_update(deltas(1), None, 0, 0).residual
    d = deltas(2)
    classic = build_method("ecolora", replace(cfg, stale_decay=1.0), LAYOUT)
    assert method.client_update(d, residual, 0, 2, missed=0).payload == classic.client_update(
        d, residual, 0, 2, missed=0).payload
    got = method.client_update(d, residual, 0, 2, missed=2)
    scaled = [r * np.float32(stale**2) for r in residual]
    want = classic.client_update(d, scaled, 0, 2, missed=0)
    assert got.payload == want.payload
    for a, b in zip(got.residual, want.residual, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("clip", [0.25, 100.0])
def test_stale_clip_caps_a_returning_residual_at_a_multiple_of_the_fresh_delta(clip):
    """With stale_clip c a returning client sends as if its residual had norm at most
    c x ||fresh delta||; a large c changes nothing, and neither does c without a missed round."""
    cfg = CompressConfig(num_segments=1, rho_a=0.1, rho_b=0.3, value_dtype="fp32",
                         stale_decay=1.0, stale_clip=clip)
    method = build_method("ecolora", cfg, LAYOUT)
    residual = [r * np.float32(10) for r in method.client_update(deltas(1), None, 0, 0).residual]
    d = deltas(2)
    plain = build_method("ecolora", replace(cfg, stale_clip=0.0), LAYOUT)
    assert method.client_update(d, residual, 0, 2, missed=0).payload == plain.client_update(
        d, residual, 0, 2, missed=0).payload
    norm = lambda xs: float(np.sqrt(sum(float(np.dot(x, x)) for x in xs)))  # noqa: E731
    factor = min(1.0, clip * norm(d) / norm(residual))
    assert (factor < 1.0) == (clip == 0.25)
    want = plain.client_update(d, [r * np.float32(factor) for r in residual], 0, 2, missed=0)
    got = method.client_update(d, residual, 0, 2, missed=1)
    assert got.payload == want.payload
    for a, b in zip(got.residual, want.residual, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_topk_ef_keeps_classic_error_feedback():
    method = build_method("topk-ef", CompressConfig(stale_decay=0.0), LAYOUT)
    assert method.cfg.stale_decay == 1.0 and method.cfg.stale_clip == 0.0


def test_upload_is_much_smaller_than_fedit():
    eco = build_method("ecolora", CompressConfig(rho_a=0.05, rho_b=0.2), LAYOUT)
    fed = build_method("fedit", CompressConfig(), LAYOUT)
    d = deltas(0)
    assert len(eco.client_update(d, None, 0, 0).payload) < len(
        fed.client_update(d, None, 0, 0).payload)


def test_wrong_segment_or_garbage_is_rejected_not_fatal():
    method = build_method("ecolora", CompressConfig(num_segments=2), LAYOUT)
    good = method.client_update(deltas(0), None, 0, 0).payload
    with pytest.raises(CorruptPayloadError, match="segment"):
        method.decode_update(good, 1, 0, 1.0)  # client 1 must send segment 1
    res = server_round(method, [(0, good, 0.5), (1, b"garbage", 0.5)], 0, ServerState(),
                       [np.zeros(t.numel, np.float32) for t in LAYOUT.tensors])
    assert list(res.rejected) == [1]
    assert "magic" in res.rejected[1] or "truncated" in res.rejected[1]


def test_compressed_download_is_smaller_and_tracks_server_residual():
    cfg = CompressConfig(compress_download=True, rho_down=0.1)
    method = build_method("ecolora", cfg, LAYOUT)
    state = ServerState()
    d = deltas(3)
    sparse = method.encode_broadcast(d, 0, state)
    dense = build_method("fedit", cfg, LAYOUT).encode_broadcast(d, 0, ServerState())
    assert len(sparse) < len(dense)
    applied = method.apply_broadcast(sparse, [np.zeros_like(x) for x in d])
    for a, r, want in zip(applied, state.residual, d, strict=True):
        np.testing.assert_allclose(a + r, want, atol=1e-3)
