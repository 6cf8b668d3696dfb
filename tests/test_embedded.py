"""The embedded default task (generated records) and the shipped base model."""

from __future__ import annotations

import pytest
import torch

from ecolora.data.embedded import CATEGORIES, EMBEDDED_BASE_DIR, make_records
from ecolora.data.prompt import format_prompt

KEYS = {"instruction", "context", "response", "category"}


def test_make_records_deterministic():
    assert make_records(300, 7) == make_records(300, 7)
    assert make_records(300, 7) != make_records(300, 8)
    assert make_records(0, 1) == []


def test_make_records_keys_and_types():
    for r in make_records(200, 0):
        assert set(r) == KEYS
        assert all(isinstance(v, str) for v in r.values())
        assert r["instruction"] and r["response"]
        assert r["category"] in CATEGORIES


def test_categories_present_and_balanced():
    assert len(CATEGORIES) >= 4
    recs = make_records(1000, 3)
    counts = {c: sum(r["category"] == c for r in recs) for c in CATEGORIES}
    assert set(counts) == set(CATEGORIES)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_sequences_are_short():
    for r in make_records(2000, 0):
        assert len(format_prompt(r["instruction"], r["context"]) + r["response"]) <= 100


def test_train_and_eval_mostly_distinct_where_space_allows():
    # Only ``count`` draws from a large space (random strings); the other categories use small
    # fixed tables that train and eval necessarily share.
    train = make_records(2000, 0)
    ev = make_records(500, 10_000)
    key = lambda r: (r["instruction"], r["context"])  # noqa: E731
    seen = {key(r) for r in train}
    counts = [r for r in ev if r["category"] == "count"]
    assert counts
    assert sum(key(r) in seen for r in counts) <= 0.2 * len(counts)


def test_responses_are_correct():
    import re

    from ecolora.data.embedded import FACTS, LETTERS, NUMBER_WORDS

    by_country = {f["country"]: f for f in FACTS}
    for r in make_records(500, 1):
        cat, resp = r["category"], r["response"]
        text = f"{r['instruction']} {r['context']}"
        words = re.findall(r"[A-Za-z]+|\d+", text)
        if cat == "count":
            word = r["context"] or words[-1]
            assert resp == str(len(word))
        elif cat == "lookup":
            (country,) = [w for w in words if w in by_country]
            key = "capital" if "capital" in text else "language"
            assert resp == by_country[country][key]
        elif cat == "numbers":
            operand = r["context"] or words[1]  # "Write seven as digits."
            if operand.isdigit():
                assert resp == NUMBER_WORDS[int(operand)]
            else:
                assert resp == str(NUMBER_WORDS.index(operand))
        elif cat == "alphabet":
            letter = r["context"] or words[-1]
            step = 1 if ("after" in text or "next" in text) else -1
            assert resp == LETTERS[LETTERS.index(letter) + step]
        elif cat == "arithmetic":
            a, b = (int(w) for w in words if w.isdigit())
            assert int(resp) == (a + b if ("plus" in text or "Add" in text) else a - b)
        else:
            raise AssertionError(f"unknown category {cat}")


def test_asset_size_under_10mb():
    assert EMBEDDED_BASE_DIR.is_dir()
    size = sum(p.stat().st_size for p in EMBEDDED_BASE_DIR.rglob("*") if p.is_file())
    assert size <= 10 * 1024 * 1024


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(EMBEDDED_BASE_DIR)


def test_tokenizer_special_tokens(tokenizer):
    assert tokenizer.eos_token is not None and tokenizer.eos_token_id is not None
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_tokenizer_round_trips_prompts(tokenizer):
    for r in make_records(50, 0):
        text = format_prompt(r["instruction"], r["context"]) + r["response"]
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text)  # one token per character
        assert tokenizer.decode(ids) == text


def test_no_unknown_characters(tokenizer):
    vocab = tokenizer.get_vocab()
    chars = set()
    for r in make_records(2000, 0):
        chars.update(format_prompt(r["instruction"], r["context"]) + r["response"])
    missing = sorted(c for c in chars if c not in vocab)
    assert missing == []
    text = "".join(sorted(chars))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.unk_token_id is not None:
        assert tokenizer.unk_token_id not in ids


def test_model_loads_and_runs(tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_BASE_DIR, dtype=torch.float32)
    assert model.dtype == torch.float32
    assert model.config.vocab_size >= len(tokenizer)
    assert model.config.max_position_embeddings >= 100
    ids = tokenizer(format_prompt("What is 2 plus 3?"), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_base_scores_below_10_percent_but_knows_the_skills():
    """Calibration (issue 3): the base fails the prompt format, yet has the facts in prose."""
    from ecolora.config import RunConfig
    from ecolora.runtime.setup import build
    from ecolora.train.local import evaluate
    from ecolora.train.model import get_params

    setup = build(RunConfig())
    params = get_params(setup.model)
    acc = evaluate(setup.model, params, setup.eval_data, setup.tokenizer.pad_token_id)
    assert acc["eval_accuracy"] < 0.10
    tok, model = setup.tokenizer, setup.model
    with model.disable_adapter(), torch.no_grad():
        ids = tok("The letter after c is ", add_special_tokens=False,
                  return_tensors="pt")["input_ids"]
        nxt = model(input_ids=ids).logits[0, -1].argmax().item()
    assert tok.decode([nxt]) == "d"
