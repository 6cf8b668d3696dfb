"""Evaluation: answer extraction (GSM8K ####, last number), perplexity, generated samples."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from tiny_models import build_tiny

from ecolora.config import ModelConfig
from ecolora.train import evaluate as ev
from ecolora.train.batches import tokenize_records
from ecolora.train.model import get_params, load_model


@pytest.mark.parametrize(("text", "rule", "want"), [
    ("Janet has 3+4=7 eggs.\n#### 7", "gsm8k", "7"),
    ("so #### 1,234.", "gsm8k", "1234"),
    ("no marker 7", "gsm8k", None),
    ("it is 12 then 15.5 apples", "last_number", "15.5"),
    ("-3, or 1,000", "last_number", "1000"),
    ("nothing", "last_number", None),
    ("  Paris \n", "exact", "Paris"),
])
def test_extract_answer(text: str, rule: str, want: str | None) -> None:
    assert ev.extract_answer(text, rule) == want


def test_auto_rule_follows_the_references() -> None:
    assert ev.resolve_extract("auto", ["a", "x\n#### 3"]) == "gsm8k"
    assert ev.resolve_extract("auto", ["a", "b"]) == "exact"
    assert ev.resolve_extract("last_number", ["#### 3"]) == "last_number"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = build_tiny("gpt2", tmp_path_factory.mktemp("eval_gpt2"))
    return load_model(ModelConfig(name=str(folder), lora_r=2), 0)


def test_generated_exact_match_and_perplexity(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok = tiny
    records = [{"instruction": "q1", "context": "", "response": "a\n#### 42", "category": ""},
               {"instruction": "q2", "context": "", "response": "b\n#### 7", "category": ""}]
    data, _ = tokenize_records(records, tok, 64)
    params = get_params(model)
    forced = ev.evaluate(model, params, data, tok.pad_token_id)
    assert forced["eval_perplexity"] == pytest.approx(math.exp(forced["eval_loss"]))
    fake = ["so the answer is #### 42", "#### 8"]
    monkeypatch.setattr(ev, "generate", lambda *a, **k: fake)
    got = ev.evaluate(model, params, data, tok.pad_token_id, tokenizer=tok, extract="gsm8k")
    assert got["eval_accuracy"] == 0.5 and got["eval_loss"] == forced["eval_loss"]


def test_generation_stays_inside_the_position_limit(tiny) -> None:
    model, tok = tiny
    limit = model.config.n_positions
    prompt = [5] * (limit - 3)
    (text,) = ev.generate(model, tok, [prompt], max_new_tokens=50)
    assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 3
    assert ev.generate(model, tok, [[5] * limit], max_new_tokens=5) == [""]


def test_samples_rows(tiny, tmp_path: Path) -> None:
    model, tok = tiny
    records = [{"instruction": f"q{i}", "context": "", "response": "r", "category": ""}
               for i in range(5)]
    data, _ = tokenize_records(records, tok, 64)
    rows = ev.generate_samples(model, get_params(model), data, tok, 2, max_new_tokens=3)
    assert [r["prompt"] for r in rows] == ["Q: q0\nA: ", "Q: q1\nA: "]
    assert all(set(r) == {"prompt", "reference", "generated", "correct"} for r in rows)
    assert ev.generate_samples(model, get_params(model), data, tok, 0, 3) == []


def test_text_metrics_score_the_generations(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    """ROUGE-L and a plugged metric score greedy generations; exact match stays teacher forced."""
    from ecolora.train.metrics import resolve_metrics

    model, tok = tiny
    records = [{"instruction": "q1", "context": "", "response": "the cat sat", "category": ""},
               {"instruction": "q2", "context": "", "response": "a dog", "category": ""}]
    data, _ = tokenize_records(records, tok, 64)
    params = get_params(model)
    forced = ev.evaluate(model, params, data, tok.pad_token_id)
    assert "eval_rouge_l" not in forced  # no metrics asked: nothing generated
    monkeypatch.setattr(ev, "generate", lambda *a, **k: ["the cat sat", "no"])
    metrics = resolve_metrics(["rouge_l", "exact_match"], dataset="x.jsonl", objective="sft",
                              extract="exact")
    got = ev.evaluate(model, params, data, tok.pad_token_id, tokenizer=tok, text_metrics=metrics)
    assert got["eval_rouge_l"] == 0.5 and got["eval_exact_match"] == 0.5
    assert got["eval_accuracy"] == forced["eval_accuracy"]
