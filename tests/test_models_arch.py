"""Any HF causal LM: per-architecture LoRA targets, one federated round of each method on each.

Seven tiny random architectures (Llama, Mistral, Qwen2, Gemma, Phi, GPT-NeoX, GPT-2) are built
locally; nothing is downloaded.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import ARCHITECTURES, build_tiny

from ecolora.config import ModelConfig, RunConfig, merge
from ecolora.errors import ModelError
from ecolora.methods import build_method
from ecolora.runtime.setup import build
from ecolora.runtime.sim import simulate
from ecolora.train.model import get_params, load_model, resolve_device, target_modules

EXPECTED = {
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "mistral": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "gemma": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "phi": {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"},
    "gpt_neox": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
    "gpt2": {"c_attn", "c_proj", "c_fc"},
}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    rows = [{"instruction": f"add {i % 5} and {i % 3}", "input": "", "output": str(i % 5 + i % 3),
             "category": ["add", "echo"][i % 2]} for i in range(24)]
    path = tmp_path_factory.mktemp("arch_data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_run_config(model: Path, data: Path, **model_knobs: object) -> RunConfig:
    return merge(RunConfig(), {
        "model": {"name": str(model), "max_seq_len": 32, "lora_r": 2, "max_new_tokens": 4,
                  **model_knobs},
        "data": {"dataset": str(data), "eval_examples": 4, "eval_samples": 1},
        "fed": {"clients": 2, "rounds": 1, "local_steps": 1, "batch_size": 2, "eval_every": 1},
    })


def adapted_modules(model) -> set[str]:
    return {name.split(".")[-4] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_one_round_of_each_method(arch: str, data_file: Path, tmp_path: Path) -> None:
    folder = build_tiny(arch, tmp_path / arch)
    setup = build(tiny_run_config(folder, data_file))
    assert adapted_modules(setup.model) == EXPECTED[arch]
    start = get_params(setup.model)
    for method in ("fedit", "ecolora"):
        setup.method = build_method(method, setup.cfg.compress, setup.layout)
        setup.cfg = replace(setup.cfg, method=method)
        samples: list[dict] = []
        setup.on_samples = samples.extend
        result = simulate(setup)
        (row,) = result["rounds"]
        assert row["method"] == method and row["upload_bytes"] > 0
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["eval_loss"])
        assert 0.0 <= row["eval_accuracy"] <= 1.0 and row["eval_perplexity"] > 1.0
        assert any(not np.array_equal(a, b) for a, b in zip(start, result["params"], strict=True))
        assert [s["round"] for s in samples] == [0, 1]  # initial eval, then after round 1


def test_target_override_and_unknown_family_fallback() -> None:
    assert target_modules("llama", ["q_proj"]) == ["q_proj"]
    assert target_modules("gpt2") == ["c_attn", "c_proj", "c_fc"]
    assert target_modules("some_new_arch") == "all-linear"
    assert target_modules("llama", ["all-linear"]) == "all-linear"  # peft's keyword, not a name


def test_override_limits_the_adapter(tmp_path: Path) -> None:
    folder = build_tiny("gpt_neox", tmp_path / "neox")
    model, _ = load_model(ModelConfig(name=str(folder), target_modules=["query_key_value"]), 0)
    assert adapted_modules(model) == {"query_key_value"}
    with pytest.raises(ModelError, match="cannot attach LoRA") as exc:
        load_model(ModelConfig(name=str(folder), target_modules=["no_such_proj"]), 0)
    assert "\n" not in str(exc.value)


def test_bf16_and_gradient_checkpointing_train(data_file: Path, tmp_path: Path) -> None:
    folder = build_tiny("llama", tmp_path / "llama")
    setup = build(tiny_run_config(folder, data_file, precision="bf16",
                                  gradient_checkpointing=True))
    base = setup.model.get_base_model()
    assert base.model.embed_tokens.weight.dtype == torch.bfloat16
    assert base.is_gradient_checkpointing
    (row,) = simulate(setup)["rounds"]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["eval_loss"])


def test_device_auto_and_missing_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            resolve_device("cuda")
