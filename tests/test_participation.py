"""Partial participation: a returning client's stale residual follows compress.stale_decay, and
under full participation the knob changes nothing (no client ever misses a round)."""

from __future__ import annotations

from pathlib import Path

from ecolora.config import RunConfig, merge
from ecolora.runtime.setup import build
from ecolora.runtime.sim import sample_clients, simulate

TIMING = {"compute_s", "comm_s"}


def _rows(model: Path, data: Path, participation: float, stale: float) -> list[dict]:
    cfg = merge(RunConfig(), {
        "model": {"name": str(model), "max_seq_len": 64, "threads": 1},
        "data": {"dataset": str(data), "eval_examples": 8, "eval_samples": 0},
        "fed": {"clients": 4, "rounds": 6, "local_steps": 2, "batch_size": 4, "eval_every": 6,
                "participation": participation},
        "compress": {"stale_decay": stale},
    })
    out = simulate(build(cfg))["rounds"]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in out]


def test_some_client_misses_a_round_in_this_setting():
    sampled = [set(sample_clients(0, t, 4, 0.5)) for t in range(6)]
    rounds_of = [[t for t in range(6) if k in sampled[t]] for k in range(4)]
    assert any(b - a > 1 for r in rounds_of for a, b in zip(r, r[1:], strict=False))


def test_stale_decay_matters_only_when_clients_miss_rounds(tiny_model_dir, alpaca_file):
    assert _rows(tiny_model_dir, alpaca_file, 1.0, 0.0) == _rows(
        tiny_model_dir, alpaca_file, 1.0, 1.0)
    dropped = _rows(tiny_model_dir, alpaca_file, 0.5, 0.0)
    kept = _rows(tiny_model_dir, alpaca_file, 0.5, 1.0)
    assert dropped[0] == kept[0]  # round 1: nobody has a residual yet
    assert [r["upload_bytes"] for r in dropped] != [r["upload_bytes"] for r in kept] or [
        r["train_loss"] for r in dropped] != [r["train_loss"] for r in kept]
