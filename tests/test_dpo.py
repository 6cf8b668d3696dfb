"""DPO: the reference is the base with adapters disabled, the loss starts at log 2, training
moves preference accuracy and the reward margin, and every method runs with it."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import build_tiny

from ecolora.config import RunConfig, merge
from ecolora.runtime.setup import build
from ecolora.runtime.sim import simulate
from ecolora.train.batches import collate_pairs
from ecolora.train.model import get_params, set_params
from ecolora.train.objectives import Objective, reference_logps, sequence_logps


@pytest.fixture(scope="module")
def pref_file(tmp_path_factory) -> Path:
    rows = [{"prompt": f"Is {i} a number?", "chosen": "yes", "rejected": "no",
             "category": ["a", "b"][i % 2]} for i in range(40)]
    path = tmp_path_factory.mktemp("pref") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("dpo_llama"))


def dpo_config(model: Path, data: Path, **fed: object) -> RunConfig:
    return merge(RunConfig(), {
        "model": {"name": str(model), "max_seq_len": 32, "lora_r": 4, "max_new_tokens": 4},
        "data": {"dataset": str(data), "eval_examples": 8, "eval_samples": 2},
        "fed": {"clients": 2, "rounds": 1, "local_steps": 2, "batch_size": 4, "eval_every": 1,
                "objective": "dpo", "dpo_beta": 0.5, "dpo_lr": 5e-2, **fed},
    })


def test_reference_is_the_base_model_without_adapters(model_dir: Path, pref_file: Path) -> None:
    from transformers import AutoModelForCausalLM

    setup = build(dpo_config(model_dir, pref_file))
    model, pad = setup.model, setup.tokenizer.pad_token_id
    pairs = setup.eval_data[:3]
    rng = np.random.default_rng(0)
    set_params(model, [rng.normal(0, 0.5, p.shape).astype(np.float32)
                       for p in get_params(model)])  # adapters now change the outputs
    ref = reference_logps(model, pairs, pad)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        plain = torch.stack([sequence_logps(base, collate_pairs([p], pad)) for p in pairs])
        policy = torch.stack([sequence_logps(model.eval(), collate_pairs([p], pad))
                              for p in pairs])
    torch.testing.assert_close(ref, plain)
    assert not torch.allclose(policy, plain)
    assert all(p.ref_logps is not None for p in pairs)  # cached: the base never changes


def test_loss_is_log2_at_init_and_accuracy_rises(model_dir: Path, pref_file: Path) -> None:
    setup = build(dpo_config(model_dir, pref_file, rounds=4))
    stats = Objective("dpo", 0.5).dpo_stats(setup.model, setup.clients[0][:4], 0)
    torch.testing.assert_close(stats["loss"], torch.full_like(stats["loss"], math.log(2)))
    samples: list[dict] = []
    setup.on_samples = samples.extend
    result = simulate(setup)
    assert result["initial"]["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    # eval scores the reference in the eval batch itself: at the zero init every margin is an
    # exact tie, reported as a tie (half a win: chance level), not as a loss or float noise
    assert result["initial"]["eval_reward_margin"] == 0.0
    assert result["initial"]["eval_pref_ties"] == 1.0
    assert result["initial"]["eval_pref_wins"] == 0.0
    assert result["initial"]["eval_pref_accuracy"] == 0.5
    last = result["rounds"][-1]
    assert last["eval_loss"] < math.log(2) - 0.05
    assert last["eval_reward_margin"] > 0 and last["eval_pref_accuracy"] == 1.0
    assert last["eval_pref_wins"] == 1.0 and last["eval_pref_ties"] == 0.0
    assert last["eval_accuracy"] == last["eval_pref_accuracy"]
    assert {s["round"] for s in samples} == {0, 1, 2, 3, 4}
    assert all(s["reference"] == "yes" and "generated" in s for s in samples)


@pytest.mark.parametrize("method", ["fedit", "ecolora"])
def test_every_method_runs_dpo(method: str, model_dir: Path, pref_file: Path) -> None:
    cfg = dpo_config(model_dir, pref_file)
    setup = build(replace(cfg, method=method))
    (row,) = simulate(setup)["rounds"]
    assert row["method"] == method and row["upload_bytes"] > 0
    assert math.isfinite(row["train_loss"]) and "eval_reward_margin" in row


def test_dpo_has_its_own_learning_rate_default() -> None:
    """fed.lr stays SFT's 1e-2; DPO trains at fed.dpo_lr unless that is 0 (then fed.lr)."""
    base = RunConfig()
    assert base.fed.client_lr == base.fed.lr == 1e-2
    dpo = merge(base, {"fed": {"objective": "dpo"}})
    assert dpo.fed.client_lr == dpo.fed.dpo_lr < dpo.fed.lr
    assert merge(dpo, {"fed": {"dpo_lr": 0, "lr": 0.3}}).fed.client_lr == 0.3
    assert merge(base, {"fed": {"dpo_lr": 0.3}}).fed.client_lr == 1e-2  # sft ignores it


def test_data_without_categories_states_the_size_skew_fallback(model_dir: Path,
                                                               tmp_path: Path) -> None:
    rows = [{"prompt": f"Is {i} a number?", "chosen": "yes", "rejected": "no"} for i in range(40)]
    path = tmp_path / "nocat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    setup = build(dpo_config(model_dir, path))
    assert "partition=quantity" in setup.partition["note"]
