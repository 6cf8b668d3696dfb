"""Closed-form checks of the robustness knobs: server optimizers, segment_mean, upload budget."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ecolora.compress.layout import AdapterLayout
from ecolora.compress.sparsify import budget_count, piece_budgets, position_bits
from ecolora.config import CompressConfig
from ecolora.methods import ServerState
from ecolora.methods.server_opt import server_step

#: fixed densities, fp16 values and FedIT's server step (the defaults: a bytes budget, 8-bit
#: values, step 2)
FIXED = dict(upload_budget=0.0, server_lr=1.0, value_bits=16)


def test_sgd_scales_by_server_lr():
    d = [np.array([1.0, -2.0], np.float32)]
    out = server_step(d, ServerState(), CompressConfig(server_lr=0.5))
    np.testing.assert_allclose(out[0], [0.5, -1.0])


def test_avgm_accumulates_momentum():
    cfg = CompressConfig(server_opt="avgm", server_beta1=0.5, server_lr=1.0)
    state = ServerState()
    d = [np.array([1.0, 0.0], np.float32)]
    first = server_step(d, state, cfg)
    second = server_step(d, state, cfg)
    np.testing.assert_allclose(first[0], [1.0, 0.0])
    np.testing.assert_allclose(second[0], [1.5, 0.0])  # 0.5 * 1 + 1


def test_lazy_adam_leaves_untouched_entries_alone():
    cfg = CompressConfig(server_opt="adam", server_beta1=0.0, server_beta2=0.0,
                         server_eps=1e-8, server_lr=0.1)
    state = ServerState()
    d = [np.array([2.0, -3.0, 5.0], np.float32)]
    touched = [np.array([True, True, False])]
    out = server_step(d, state, cfg, touched)
    # beta1 = beta2 = 0: m = d, v = d^2, step = lr * sign(d) on touched entries only
    np.testing.assert_allclose(out[0], [0.1, -0.1, 0.0], rtol=1e-5)
    assert state.opt_m[0][2] == 0 and state.opt_step == 1


def test_segment_mean_enters_deltas_at_one_over_s():
    from ecolora.methods import build_method

    layout = AdapterLayout.from_shapes({"layers.0.q.lora_A": (2, 4), "layers.0.q.lora_B": (4, 2)})
    cfg = CompressConfig(**FIXED, num_segments=2, residual_scope="segment_mean", rho_a=1.0,
                         rho_b=1.0, sparsity_schedule="constant", value_dtype="fp32")
    m = build_method("ecolora", cfg, layout)
    delta = [np.full(8, 2.0, np.float32), np.full(8, 4.0, np.float32)]
    up = m.client_update(delta, None, client=0, round_=0)
    # the sent segment is dense: residual 0 there; the unsent one keeps delta / S
    sent = m.segments[up.segment][0].tensor
    other = 1 - sent
    np.testing.assert_allclose(up.residual[sent], 0.0)
    np.testing.assert_allclose(up.residual[other], delta[other] / 2)


@pytest.mark.parametrize(("s", "scope", "lr", "want_scope", "want_step"), [
    (1, "auto", 0.0, "segment_mean", 2.0), (2, "auto", 0.0, "segment_mean", 2.0),
    (3, "auto", 0.0, "sparsified_only", 1.0), (8, "auto", 0.0, "sparsified_only", 1.0),
    (1, "sparsified_only", 0.0, "sparsified_only", 2.0),  # one segment: the scopes agree
    (4, "segment_mean", 0.0, "segment_mean", 2.0), (4, "all_untransmitted", 0.0,
                                                    "all_untransmitted", 1.0),
    (8, "auto", 1.5, "sparsified_only", 1.5),  # a server_lr the user sets always wins
])
def test_auto_scope_and_step_follow_the_number_of_segments(s, scope, lr, want_scope, want_step):
    cfg = CompressConfig(num_segments=s, residual_scope=scope, server_lr=lr)
    assert (cfg.scope, cfg.step) == (want_scope, want_step)
    out = server_step([np.array([1.0, -2.0], np.float32)], ServerState(), cfg)
    np.testing.assert_allclose(out[0], [want_step, -2 * want_step])


def test_auto_scope_at_s4_drops_the_unsent_segments():
    from ecolora.methods import build_method

    layout = AdapterLayout.from_shapes({f"layers.{i}.q.lora_A": (2, 4) for i in range(4)})
    cfg = CompressConfig(**FIXED, num_segments=4, rho_a=1.0, rho_b=1.0,
                         sparsity_schedule="constant", value_dtype="fp32")
    m = build_method("ecolora", cfg, layout)
    up = m.client_update([np.full(8, 3.0, np.float32)] * 4, None, client=1, round_=0)
    assert all(not r.any() for r in up.residual)  # dense sent segment, the rest dropped


def test_budget_count_fits_and_is_largest():
    n_all = 100_000
    for s in (1, 2, 4, 8):
        n = n_all // s
        k = budget_count(0.1, n, n_all, 16)
        allowed = 0.1 * 16 * n_all
        assert k * (16 + position_bits(k / n)) <= allowed
        assert k == n or (k + 1) * (16 + position_bits((k + 1) / n)) > allowed
    assert budget_count(1.0, 500, 1000, 16) == 500  # a dense segment fits


def test_position_bits_matches_spec_table():
    assert position_bits(0.01) == pytest.approx(8.11, abs=0.01)  # spec §6
    assert position_bits(0.1) == pytest.approx(4.76, abs=0.01)


def test_budget_overrides_densities_in_piece_budgets():
    from ecolora.compress.segments import Piece

    layout = AdapterLayout.from_shapes({"layers.0.q.lora_A": (8, 500),
                                        "layers.0.q.lora_B": (500, 8)})
    pieces = [Piece(0, 0, 4000), Piece(1, 0, 4000)]
    vals = [np.ones(4000, np.float32)] * 2
    cfg = replace(CompressConfig(), upload_budget=0.1, rho_a=0.05, rho_b=0.2, value_bits=16)
    got = piece_budgets(vals, pieces, layout, 0, cfg)
    total = budget_count(0.1, 8000, 8000, 16)
    assert sum(got) <= total and sum(got) >= total - 2
    assert got[1] == pytest.approx(4 * got[0], rel=0.01)  # rho_b : rho_a = 4 : 1


def test_budget_counts_quantized_values_at_their_width():
    """Under value_bits=8 the same bytes budget keeps more entries than with fp16 values."""
    from ecolora.compress.segments import Piece

    layout = AdapterLayout.from_shapes({"layers.0.q.lora_A": (8, 500),
                                        "layers.0.q.lora_B": (500, 8)})
    pieces = [Piece(0, 0, 4000), Piece(1, 0, 4000)]
    vals = [np.ones(4000, np.float32)] * 2
    base = replace(CompressConfig(), upload_budget=0.05, value_bits=16)
    fp16 = sum(piece_budgets(vals, pieces, layout, 0, base))
    q8 = sum(piece_budgets(vals, pieces, layout, 0, replace(base, value_bits=8)))
    assert fp16 <= budget_count(0.05, 8000, 8000, 16) and q8 <= budget_count(0.05, 8000, 8000, 8)
    assert q8 > 1.4 * fp16


@pytest.mark.parametrize(("bits", "budget"), [(16, 0.05), (8, 0.05), (4, 0.025), (8, 0.2)])
def test_upload_budget_caps_the_encoded_bytes(bits, budget):
    """Framing, per-record scales and Rice positions can exceed ``budget_count``'s estimate
    (q8 at 0.05 sent 1,967 bytes for 1,867 allowed before the cap); the payload actually sent
    stays within it."""
    from ecolora.compress import wire
    from ecolora.methods import build_method

    shapes = {f"layers.{i}.{m}.lora_{k}": (8, 192) if k == "A" else (192, 8)
              for i in range(3) for m in ("q", "v") for k in "AB"}
    layout = AdapterLayout.from_shapes(shapes)
    rng = np.random.default_rng(0)
    delta = [rng.standard_normal(t.numel).astype(np.float32) for t in layout.tensors]
    m = build_method("ecolora", CompressConfig(value_bits=bits, upload_budget=budget), layout)
    up = m.client_update(delta, None, client=0, round_=5)
    allowed = budget * 2 * layout.numel + wire.FRAME_BYTES  # 16 bits an entry, plus the frame
    assert len(up.payload) <= allowed
    assert len(up.payload) >= 0.8 * allowed  # and the budget is used


def test_dpo_runs_step_at_dpo_server_lr():
    from ecolora.config import RunConfig

    sft = RunConfig.from_dict({"compress": {"server_lr": 2.0, "dpo_server_lr": 0.5}})
    dpo = RunConfig.from_dict({"fed": {"objective": "dpo"},
                               "compress": {"server_lr": 2.0, "dpo_server_lr": 0.5}})
    assert sft.method_compress.step == 2.0
    assert dpo.method_compress.step == 0.5
    assert dpo.compress.server_lr == 2.0  # the saved config is what the user set
