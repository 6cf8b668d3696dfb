"""Round-robin segments (spec §4) and A/B sparsification (spec §5)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecolora.compress.layout import AdapterLayout
from ecolora.compress.segments import make_segments, segment_for
from ecolora.compress.sparsify import density_at, sparsify
from ecolora.config import CompressConfig
from ecolora.errors import ConfigError


def layout(layers: int = 3) -> AdapterLayout:
    shapes = {}
    for i in range(layers):
        for m, (dout, din) in {"q_proj": (16, 16), "up_proj": (40, 16)}.items():
            shapes[f"model.layers.{i}.{m}.lora_A.default.weight"] = (4, din)
            shapes[f"model.layers.{i}.{m}.lora_B.default.weight"] = (dout, 4)
    return AdapterLayout.from_shapes(shapes)


def coverage(lay: AdapterLayout, segs) -> np.ndarray:
    hits = [np.zeros(t.numel, int) for t in lay.tensors]
    for seg in segs:
        for p in seg:
            hits[p.tensor][p.start : p.stop] += 1
    return np.concatenate(hits)


@pytest.mark.parametrize("by", ["module", "layer", "flat_chunks"])
@pytest.mark.parametrize("s", [1, 2, 3])
def test_segments_partition_every_entry_once(by, s):
    lay = layout()
    segs = make_segments(lay, s, by)
    assert len(segs) == s
    assert (coverage(lay, segs) == 1).all()


def test_module_segments_are_balanced():
    lay = layout(4)
    sizes = [sum(p.size for p in seg) for seg in make_segments(lay, 4, "module")]
    assert max(sizes) / min(sizes) < 1.3


@given(st.integers(1, 12), st.integers(0, 1000), st.integers(1, 50))
def test_rotation_covers_each_segment_once_in_s_rounds(s, t0, client):
    seen = [segment_for(client, t, s) for t in range(t0, t0 + s)]
    assert sorted(seen) == list(range(s))


def test_clients_in_one_round_are_complementary():
    assert sorted(segment_for(k, 5, 4) for k in range(4)) == [0, 1, 2, 3]


def test_too_many_segments_is_a_config_error():
    lay = layout(1)
    with pytest.raises(ConfigError, match="larger than the 4 LoRA tensors"):
        make_segments(lay, 5, "module")
    assert len(make_segments(lay, 5, "flat_chunks")) == 5


def test_a_and_b_budgets_differ():
    lay = layout(1)
    cfg = CompressConfig(upload_budget=0.0, rho_a=0.1, rho_b=0.5, sparsity_schedule="constant",
                         topk_scope="per_tensor")
    seg = make_segments(lay, 1, "module")[0]
    vals = [np.random.default_rng(i).normal(size=p.size).astype(np.float32)
            for i, p in enumerate(seg)]
    kept = sparsify(vals, seg, lay, 0, cfg)
    for p, k, v in zip(seg, kept, vals, strict=True):
        rho = 0.1 if lay.tensors[p.tensor].kind == "A" else 0.5
        assert len(k) == int(np.ceil(rho * p.size))
        # top-k: every kept magnitude >= every dropped magnitude
        dropped = np.setdiff1d(np.arange(p.size), k)
        assert np.abs(v[k]).min() >= np.abs(v[dropped]).max()


def test_schedules_start_dense_and_reach_target():
    for sched in ("linear", "exp"):
        cfg = CompressConfig(sparsity_schedule=sched, rho_start=1.0, schedule_rounds=10)
        assert density_at(0.1, 0, cfg) == 1.0
        assert density_at(0.1, 10, cfg) == 0.1
        assert 0.1 < density_at(0.1, 5, cfg) < 1.0


def test_energy_split_moves_budget_to_the_energetic_kind():
    lay = layout(1)
    seg = make_segments(lay, 1, "module")[0]
    vals = [np.full(p.size, 10.0 if lay.tensors[p.tensor].kind == "B" else 0.01, np.float32)
            for p in seg]
    cfg = CompressConfig(upload_budget=0.0, rho_a=0.2, rho_b=0.2, sparsity_schedule="energy_split",
                         topk_scope="per_tensor")
    kept = sparsify(vals, seg, lay, 0, cfg)
    n_a = sum(len(k) for p, k in zip(seg, kept, strict=True) if lay.tensors[p.tensor].kind == "A")
    n_b = sum(len(k) for p, k in zip(seg, kept, strict=True) if lay.tensors[p.tensor].kind == "B")
    assert n_b > 4 * n_a
    per_segment = sparsify(vals, seg, lay, 0, replace(cfg, topk_scope="per_segment",
                                                     sparsity_schedule="constant"))
    # ties go to the lower index, so a whole tensor may be kept (None: sent dense)
    kept_all = sum(p.size if k is None else len(k) for p, k in zip(seg, per_segment, strict=True))
    assert kept_all == pytest.approx(n_a + n_b, rel=0.05)


def test_per_kind_scope_keeps_the_ab_split_and_moves_budget_between_layers():
    lay = layout(2)
    seg = make_segments(lay, 1, "module")[0]
    rng = np.random.default_rng(3)
    # layer 0 has 10x larger updates than layer 1: its tensors should take most of the budget
    vals = [rng.normal(size=p.size).astype(np.float32) * (10.0 if j < len(seg) // 2 else 1.0)
            for j, p in enumerate(seg)]
    cfg = CompressConfig(rho_a=0.1, rho_b=0.3, sparsity_schedule="constant", topk_scope="per_kind")
    kept = sparsify(vals, seg, lay, 0, cfg)
    per_tensor = sparsify(vals, seg, lay, 0, replace(cfg, topk_scope="per_tensor"))
    for kind in ("A", "B"):
        idx = [j for j, p in enumerate(seg) if lay.tensors[p.tensor].kind == kind]
        count = [seg[idx[0]].size if kept[j] is None else len(kept[j]) for j in idx]
        assert sum(count) == sum(len(per_tensor[j]) for j in idx)  # the kind's budget holds
        assert count[0] > 2 * count[-1]  # and flows to the layer with larger updates
        mags = np.concatenate([np.abs(vals[j]) for j in idx])
        mask = np.concatenate([np.isin(np.arange(seg[j].size), kept[j]) for j in idx])
        assert mags[mask].min() >= mags[~mask].max()  # top-k across the kind


@pytest.mark.parametrize("rho", [0.05, 0.5, 1.0])
def test_pooled_selection_is_the_flat_topk_split_by_piece(rho):
    """per_segment: each piece gets exactly the entries of the pooled top-k that fall in it
    (a dense budget sends every piece whole, without running a top-k)."""
    from ecolora.compress.sparsify import piece_budgets, topk_indices

    lay = layout(2)
    seg = make_segments(lay, 1, "module")[0]
    rng = np.random.default_rng(7)
    vals = [rng.normal(size=p.size).astype(np.float32) * (j + 1) for j, p in enumerate(seg)]
    cfg = CompressConfig(upload_budget=0.0, rho_a=rho, rho_b=rho, sparsity_schedule="constant",
                         topk_scope="per_segment")
    kept = sparsify(vals, seg, lay, 0, cfg)
    flat = np.concatenate(vals)
    chosen = topk_indices(flat, sum(piece_budgets(vals, seg, lay, 0, cfg)))
    start = 0
    for p, k in zip(seg, kept, strict=True):
        want = chosen[(chosen >= start) & (chosen < start + p.size)] - start
        got = np.arange(p.size) if k is None else k
        np.testing.assert_array_equal(got, want)
        start += p.size
    if rho == 1.0:
        assert all(k is None for k in kept)
