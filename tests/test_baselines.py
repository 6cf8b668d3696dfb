"""Baselines and ablations as variants of the one Method: what each sends, trains and keeps."""

from __future__ import annotations

import numpy as np
import pytest

from ecolora.compress import wire
from ecolora.compress.layout import AdapterLayout
from ecolora.config import METHODS, CompressConfig, RunConfig, merge
from ecolora.errors import ConfigError, CorruptPayloadError
from ecolora.methods import VARIANTS, ServerState, build_method, rawpos
from ecolora.methods.variants import uniform_density
from ecolora.runtime.rounds import server_round

LAYOUT = AdapterLayout.from_shapes({
    "l.0.q.lora_A.w": (4, 32), "l.0.q.lora_B.w": (48, 4),
    "l.0.v.lora_A.w": (4, 32), "l.0.v.lora_B.w": (48, 4),
    "l.1.q.lora_A.w": (4, 32), "l.1.q.lora_B.w": (48, 4),
    "l.1.v.lora_A.w": (4, 32), "l.1.v.lora_B.w": (48, 4),
})
KINDS = [t.kind for t in LAYOUT.tensors]
ZERO = [np.zeros(t.numel, np.float32) for t in LAYOUT.tensors]


def deltas(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=t.numel).astype(np.float32) for t in LAYOUT.tensors]


def sent_tensors(method, payload: bytes) -> set[int]:
    return {r.tensor for r in method._decode(payload).records}


def test_every_configured_method_is_a_documented_variant():
    assert set(METHODS) == set(VARIANTS)
    for v in VARIANTS.values():
        assert v.uploads and v.source and v.positions in ("rice", "int32")
    assert "Zhang" in VARIANTS["fedit"].source and "Sun" in VARIANTS["ffa-lora"].source
    assert "Guo" in VARIANTS["fedsa-lora"].source and "Stich" in VARIANTS["topk-ef"].source
    with pytest.raises(ConfigError, match="unknown method"):
        build_method("fedavg", CompressConfig(), LAYOUT)
    assert merge(RunConfig(), {"method": "topk-ef"}).method == "topk-ef"


def test_ffa_lora_trains_and_sends_only_b():
    method = build_method("ffa-lora", CompressConfig(), LAYOUT)
    assert method.trainable_mask == [k == "B" for k in KINDS] and method.local == []
    up = method.client_update(deltas(0), None, 0, 0)
    assert sent_tensors(method, up.payload) == {i for i, k in enumerate(KINDS) if k == "B"}
    fedit = build_method("fedit", CompressConfig(), LAYOUT).client_update(deltas(0), None, 0, 0)
    n_b = sum(t.numel for t in LAYOUT.tensors if t.kind == "B")
    assert up.nonzeros == n_b and len(up.payload) < len(fedit.payload) * 0.65
    res = server_round(method, [(0, up.payload, 1.0)], 0, ServerState(), ZERO)
    for p, kind in zip(res.params, KINDS, strict=True):
        assert (p.any() if kind == "B" else not p.any())
    assert sent_tensors(method, res.broadcast) == sent_tensors(method, up.payload)


def test_fedsa_lora_shares_a_and_keeps_b_on_the_client():
    method = build_method("fedsa-lora", CompressConfig(), LAYOUT)
    b_idx = [i for i, k in enumerate(KINDS) if k == "B"]
    assert method.trainable_mask is None and method.local == b_idx
    up = method.client_update(deltas(1), None, 0, 0)
    assert sent_tensors(method, up.payload) == set(range(len(KINDS))) - set(b_idx)
    mine = [np.full(LAYOUT.tensors[i].numel, 7.0, np.float32) for i in b_idx]
    start = method.client_start(ZERO, mine)
    assert all((start[i] == 7).all() for i in b_idx) and not start[0].any()
    kept = method.keep_local(start)
    assert len(kept) == len(b_idx) and kept[0] is not start[b_idx[0]]
    assert method.client_start(ZERO, None) is ZERO


def test_topk_ef_is_budget_matched_with_raw_int32_positions():
    cfg = CompressConfig(num_segments=2, rho_a=0.05, rho_b=0.2, upload_budget=0.0)
    topk, eco = build_method("topk-ef", cfg, LAYOUT), build_method("ecolora", cfg, LAYOUT)
    assert topk.cfg.num_segments == 1 and topk.cfg.error_feedback
    assert topk.cfg.rho_a == topk.cfg.rho_b == pytest.approx(uniform_density(cfg, LAYOUT) / 2)
    kept_topk = topk.client_update(deltas(2), None, 0, 0)
    kept_eco = [eco.client_update(deltas(2), None, k, 0).nonzeros for k in (0, 1)]
    assert abs(kept_topk.nonzeros - np.mean(kept_eco)) <= len(LAYOUT)  # ceil per tensor
    # raw positions: 20 header + 4-8 varint bytes per record + 4 (u32 position) + 2 (fp16 value)
    # per kept entry + 4 crc
    fixed = len(kept_topk.payload) - 24 - 6 * kept_topk.nonzeros
    assert 4 * len(LAYOUT) <= fixed <= 8 * len(LAYOUT)
    msg = rawpos.decode(kept_topk.payload)
    assert all(r.indices is not None for r in msg.records)
    assert kept_topk.residual is not None  # error feedback


def test_topk_ef_under_a_budget_keeps_ecolora_s_count_at_ecolora_s_value_width():
    """Under upload_budget topk-ef keeps the count ecolora's budget estimate gives at
    ecolora's value width, so 8-bit ecolora values raise it (topk-ef's own values stay
    16-bit: it spends more bytes on the same count)."""
    from ecolora.compress.sparsify import budget_count

    n = LAYOUT.numel
    got = {}
    for bits in (16, 8):
        top = build_method("topk-ef", CompressConfig(value_bits=bits, upload_budget=0.2), LAYOUT)
        assert top.cfg.value_bits == 16
        got[bits] = top.client_update(deltas(5), None, 0, 10).nonzeros  # after the warm-up
        assert abs(got[bits] - budget_count(0.2, n, n, bits)) <= len(LAYOUT)
    assert got[8] > 1.3 * got[16]


def test_topk_ef_budget_follows_the_warm_up():
    cfg = CompressConfig(num_segments=2, upload_budget=0.0, sparsity_schedule="exp", rho_start=0.5,
                         schedule_rounds=5)
    topk, eco = build_method("topk-ef", cfg, LAYOUT), build_method("ecolora", cfg, LAYOUT)
    assert topk.cfg.sparsity_schedule == "exp" and topk.cfg.rho_start == 0.25
    kept = []
    for r in range(7):  # warm-up rounds, then the steady state
        t = topk.client_update(deltas(2), None, 0, r).nonzeros
        e = np.mean([eco.client_update(deltas(2), None, k, r).nonzeros for k in (0, 1)])
        assert abs(t / e - 1) <= 0.07
        kept.append(t)
    assert kept[0] > 3 * kept[-1] and kept[5] == kept[6]


def test_no_golomb_sends_the_same_values_in_more_bytes():
    # int32 framing has no 8/4-bit codes; at 0.1 the Rice payload fits its estimated count
    cfg = CompressConfig(value_bits=16, upload_budget=0.1)
    eco = build_method("ecolora", cfg, LAYOUT)
    raw = build_method("eco-no-golomb", cfg, LAYOUT)
    a, b = eco.client_update(deltas(3), None, 0, 0), raw.client_update(deltas(3), None, 0, 0)
    assert a.nonzeros == b.nonzeros and len(b.payload) > len(a.payload)
    da, db = eco.decode_update(a.payload, 0, 0, 1.0), raw.decode_update(b.payload, 0, 0, 1.0)
    for (pa, ia, va), (pb, ib, vb) in zip(da[2], db[2], strict=True):
        assert pa == pb
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(va, vb)
    with pytest.raises(CorruptPayloadError):  # each decoder refuses the other's coding
        eco.decode_update(b.payload, 0, 0, 1.0)
    with pytest.raises(CorruptPayloadError):
        raw.decode_update(a.payload, 0, 0, 1.0)


def test_ablations_change_one_thing_each():
    cfg = CompressConfig(num_segments=2, rho_a=0.05, rho_b=0.2)
    eco = build_method("ecolora", cfg, LAYOUT)
    no_ab = build_method("eco-no-ab", cfg, LAYOUT)
    assert no_ab.cfg.rho_a == no_ab.cfg.rho_b == pytest.approx(uniform_density(cfg, LAYOUT))
    assert no_ab.cfg.num_segments == 2 and no_ab.cfg.error_feedback
    got = no_ab.client_update(deltas(4), None, 0, 0).nonzeros
    assert abs(got - eco.client_update(deltas(4), None, 0, 0).nonzeros) <= len(LAYOUT)
    no_ef = build_method("eco-no-ef", cfg, LAYOUT)
    assert no_ef.client_update(deltas(4), None, 0, 0).residual is None
    seg = build_method("eco-seg-only", cfg, LAYOUT)
    up = seg.client_update(deltas(4), None, 1, 0)
    assert up.nonzeros == sum(p.size for p in seg.segments[1]) and up.residual is None
    assert wire.decode(up.payload).records[0].indices is None


def test_uniform_density_keeps_ecolora_budget():
    cfg = CompressConfig(rho_a=0.1, rho_b=0.3)
    n_a = sum(t.numel for t in LAYOUT.tensors if t.kind == "A")
    want = (0.1 * n_a + 0.3 * (LAYOUT.numel - n_a)) / LAYOUT.numel
    assert uniform_density(cfg, LAYOUT) == pytest.approx(want)


@pytest.mark.parametrize("mutate", [
    lambda b: b[:-9] + b[-8:],  # a byte missing
    lambda b: b"XXXX" + b[4:],
    lambda b: b[:60] + bytes([b[60] ^ 1]) + b[61:],  # crc mismatch
])
def test_rawpos_rejects_corrupt_payloads(mutate):
    method = build_method("topk-ef", CompressConfig(), LAYOUT)
    good = method.client_update(deltas(5), None, 0, 0).payload
    with pytest.raises(CorruptPayloadError):
        method.decode_update(mutate(good), 0, 0, 1.0)


def test_rawpos_rejects_unsorted_positions_with_a_valid_crc():
    rec = wire.Record(0, 0, 10, np.ones(2, np.float32), np.array([5, 3]))
    with pytest.raises(ValueError):
        rawpos.encode(wire.Payload(0, 0, 0, "fp16", [rec]))
    ok = rawpos.encode(wire.Payload(0, 0, 0, "fp16", [wire.Record(0, 0, 10, np.ones(2, np.float32),
                                                                   np.array([3, 5]))]), False)
    body = bytearray(ok[:-4])
    body[24:32] = np.array([5, 3], "<u4").tobytes()  # after 20 header + 4 varint bytes
    import zlib

    bad = bytes(body) + zlib.crc32(body).to_bytes(4, "little")
    with pytest.raises(CorruptPayloadError, match="positions"):
        rawpos.decode(bad)


@pytest.mark.parametrize("name", ["ffa-lora", "fedsa-lora"])
def test_tiny_model_run_keeps_frozen_and_local_tensors(name, tiny_model_dir, alpaca_file):
    """Two real rounds: FFA-LoRA's A never moves; FedSA-LoRA's global B stays (B is local)."""
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import simulate
    from ecolora.train.model import get_params

    cfg = merge(RunConfig(), {"method": name, "model": {"name": str(tiny_model_dir)},
                              "data": {"dataset": str(alpaca_file), "eval_examples": 8},
                              "fed": {"rounds": 2, "clients": 3, "local_steps": 2,
                                      "eval_every": 1, "lr": 0.05}})
    setup = build(cfg)
    start = get_params(setup.model)
    out = simulate(setup)
    fixed = "A" if name == "ffa-lora" else "B"
    for t, before, after in zip(setup.layout.tensors, start, out["params"], strict=True):
        assert np.array_equal(before, after) == (t.kind == fixed), t.name
    assert all("eval_accuracy" in r and r["upload_bytes_max"] > 0 for r in out["rounds"])


def test_rawpos_packs_values_like_wire_when_smaller():
    rng = np.random.default_rng(0)
    n, k = 100_000, 2_000
    idx = np.sort(rng.choice(n, size=k, replace=False))
    vals = (rng.uniform(1.0, 1.99, size=k) * rng.choice([-1, 1], size=k)).astype(np.float32)
    payload = wire.Payload(0, 3, 1, "fp16", [wire.Record(2, 0, n, vals, idx),
                                             wire.Record(0, 0, 4, np.arange(4, dtype=np.float32))])
    plain, packed = rawpos.encode(payload, False), rawpos.encode(payload, True)
    assert len(packed) < len(plain) - k // 2  # one binade: the exponent byte nearly vanishes
    for buf in (plain, packed):
        out = rawpos.decode(buf)
        assert (out.round, out.segment) == (3, 1)
        np.testing.assert_array_equal(out.records[0].indices, idx)
        np.testing.assert_array_equal(out.records[0].values, vals.astype(np.float16))
        np.testing.assert_array_equal(out.records[1].values, np.arange(4))
        assert out.records[1].indices is None
    with pytest.raises(CorruptPayloadError):
        rawpos.decode(packed[:-5] + packed[-4:])


@pytest.mark.parametrize("name", ["topk-ef", "eco-no-golomb", "ecolora"])
def test_full_state_and_broadcasts_apply_for_every_position_coding(name):
    """The full state is a wire frame for every method (a node resyncing on Flower decodes it);
    an int32 variant's broadcast deltas are in its own framing."""
    method = build_method(name, CompressConfig(), LAYOUT)
    params = deltas(5)
    full = method.apply_broadcast(method.encode_full_state(params, 3), ZERO, replace=True)
    for got, want in zip(full, params, strict=True):
        np.testing.assert_array_equal(got, want)
    down = method.encode_broadcast(deltas(6), 3, ServerState())
    moved = method.apply_broadcast(down, params)
    for got, p, d in zip(moved, params, deltas(6), strict=True):
        np.testing.assert_allclose(got, p + d.astype(np.float16).astype(np.float32), rtol=1e-6)
