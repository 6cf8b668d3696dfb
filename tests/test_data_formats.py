"""Containers (CSV, TSV, Parquet, hub configs) and formats (chat, preference, GSM8K, ...), and
their tokenization: chat templates, response-only loss, truncation counts, preference pairs."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from ecolora.config import ModelConfig
from ecolora.data.embedded import EMBEDDED_BASE_DIR
from ecolora.data.files import load_records
from ecolora.data.prompt import render_prompt
from ecolora.errors import ConfigError, DataError
from ecolora.train.batches import (
    IGNORE,
    Example,
    PairExample,
    TokenBudget,
    collate,
    tokenize,
    tokenize_records,
)

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl"
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(EMBEDDED_BASE_DIR)


@pytest.fixture()
def chat_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(EMBEDDED_BASE_DIR)
    tok.chat_template = CHAT_TEMPLATE
    return tok


# --------------------------------------------------------------------------- containers


def test_csv_and_tsv_keep_every_cell_a_string(tmp_path: Path) -> None:
    frame = pd.DataFrame({"instruction": ["add 1 2", "say hi"], "input": ["", "x"],
                          "output": ["3", "007"], "category": ["math", "chat"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_csv(tmp_path / "d.tsv", index=False, sep="\t")
    for name in ("d.csv", "d.tsv"):
        records = load_records(tmp_path / name)
        assert records[1] == {"instruction": "say hi", "context": "x", "response": "007",
                              "category": "chat"}
        assert records[0]["context"] == ""


def test_csv_errors_name_the_row(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("instruction,output\nq,a\n")
    (tmp_path / "e.csv").write_text("question,answer\nq,\nr,b\n")  # one empty answer is kept
    assert load_records(tmp_path / "e.csv")[0] == {"instruction": "q", "context": "",
                                                   "response": "", "category": ""}
    (tmp_path / "f.csv").write_text("text,label\nq,a\n")
    with pytest.raises(DataError, match=r"f\.csv row 1: unrecognized dataset format"):
        load_records(tmp_path / "f.csv")


def test_parquet_with_nested_chat_messages(tmp_path: Path) -> None:
    frame = pd.DataFrame({"messages": [[{"role": "user", "content": "hi"},
                                        {"role": "assistant", "content": "hello"}]],
                          "category": ["greet"]})
    frame.to_parquet(tmp_path / "c.parquet")
    assert load_records(tmp_path / "c.parquet") == [
        {"instruction": "hi", "context": "", "response": "hello", "category": "greet"}
    ]
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: cannot read as Parquet") as exc:
        load_records(tmp_path / "bad.parquet")
    assert "\n" not in str(exc.value)


def test_hub_name_with_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def load_dataset(*args: object, split: object = None) -> list[dict]:
        calls.append((*args, split))
        return [{"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}]

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    monkeypatch.chdir(tmp_path)
    records = load_records("openai/gsm8k:main")
    assert calls == [("openai/gsm8k", "main", "train")]
    assert records[0]["response"] == "2+2=4\n#### 4"  # kept verbatim; eval extracts after ####


# --------------------------------------------------------------------------- formats


def test_chat_messages_with_history_and_sharegpt(tmp_path: Path) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"},
            {"role": "assistant", "content": "6"}]
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": chat}])
    (r,) = load_records(path)
    assert (r["instruction"], r["response"]) == ("and 3+3?", "6")
    assert [m["role"] for m in r["history"]] == ["system", "user", "assistant"]
    share = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hey"}]
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": share}])
    assert load_records(path)[0]["response"] == "hey"


@pytest.mark.parametrize(("messages", "match"), [
    ([{"role": "user", "content": "hi"}], "must end with a user turn and the assistant's reply"),
    ([{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}], "no known role"),
    ([{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}], "content must be"),
])
def test_bad_chat_is_one_line(tmp_path: Path, messages: list, match: str) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": messages}])
    with pytest.raises(DataError, match=rf"c\.jsonl:1: .*{match}") as exc:
        load_records(path)
    assert "\n" not in str(exc.value)


def test_preference_with_prompt_strings_and_message_lists(tmp_path: Path) -> None:
    rows = [{"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome"}]
    (r,) = load_records(write_jsonl(tmp_path / "p.jsonl", rows))
    assert r == {"instruction": "Capital of France?", "context": "", "response": "Paris",
                 "rejected": "Rome", "category": ""}
    # UltraFeedback-binarized style: chosen/rejected are whole conversations
    user = {"role": "user", "content": "Say hi"}
    rows = [{"prompt": "Say hi", "chosen": [user, {"role": "assistant", "content": "Hi!"}],
             "rejected": [user, {"role": "assistant", "content": "No."}], "category": "chat"}]
    (r,) = load_records(write_jsonl(tmp_path / "u.jsonl", rows))
    assert (r["instruction"], r["response"], r["rejected"], r["category"]) == (
        "Say hi", "Hi!", "No.", "chat")


def test_hh_rlhf_transcripts_split_at_the_last_shared_assistant_turn(tmp_path: Path) -> None:
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to bake?\n\nAssistant: Use an oven."
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to bake?\n\nAssistant: Unsure."
    (r,) = load_records(write_jsonl(tmp_path / "hh.jsonl",
                                    [{"chosen": chosen, "rejected": rejected}]))
    assert (r["instruction"], r["response"], r["rejected"]) == ("how to bake?", "Use an oven.",
                                                                "Unsure.")
    assert r["history"] == [{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "hello"}]


def test_real_hh_rlhf_file() -> None:
    if not HH.is_file():
        pytest.skip(f"{HH} not present")
    records = load_records(HH)
    assert len(records) == 2312
    assert all(r["instruction"] and "rejected" in r for r in records)
    assert sum(r["response"] != r["rejected"] for r in records) >= 2300


def test_gsm8k_prompt_completion_and_category_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "1+1?", "answer": "1+1=2\n#### 2",
                                               "level": 3}])
    (r,) = load_records(path, category_field="level")
    assert (r["response"], r["category"]) == ("1+1=2\n#### 2", "3")
    with pytest.raises(DataError, match="missing category field 'topic'"):
        load_records(path, category_field="topic")
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "a", "completion": "b"}])
    assert load_records(path)[0]["response"] == "b"


def test_mapping_can_name_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"q": "x", "good": "y", "bad": "z"}])
    (r,) = load_records(path, fields={"instruction": "q", "response": "good", "rejected": "bad"})
    assert (r["response"], r["rejected"]) == ("y", "z")


# --------------------------------------------------------------------------- tokenization


def test_plain_prompt_without_chat_template(tokenizer) -> None:
    record = {"instruction": "hi", "context": "", "response": "yo", "category": "",
              "history": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    assert render_prompt(record, tokenizer) == "Q: a\nA: b\nQ: hi\nA: "


def test_chat_template_is_used_and_loss_is_on_the_response(chat_tokenizer) -> None:
    record = {"instruction": "hi", "context": "ctx", "response": "yo", "category": ""}
    assert render_prompt(record, chat_tokenizer) == "<user>hi\n\nctx\n<assistant>"
    (ex,), truncated = tokenize_records([record], chat_tokenizer, 64)
    assert truncated == 0
    text = chat_tokenizer.decode(ex.input_ids[: ex.n_prompt])
    assert text == "<user>hi\n\nctx\n<assistant>"
    batch = collate([ex], chat_tokenizer.pad_token_id)
    scored = [t for t in batch["labels"][0].tolist() if t != IGNORE]
    assert scored == ex.input_ids[ex.n_prompt:]
    assert scored[-1] == chat_tokenizer.eos_token_id
    assert chat_tokenizer.decode(scored[:-1]) == "yo"


def test_truncation_is_counted_and_keeps_the_response(tokenizer) -> None:
    long = {"instruction": "x" * 100, "context": "", "response": "abc", "category": ""}
    short = {"instruction": "q", "context": "", "response": "a", "category": ""}
    examples, truncated = tokenize_records([long, short], tokenizer, 16)
    assert truncated == 1
    assert all(len(e.input_ids) <= 16 for e in examples)
    assert tokenizer.decode(examples[0].input_ids[examples[0].n_prompt:-1]) == "abc"


def test_prompt_budget_keeps_the_prompt_and_gives_the_response_the_rest(tokenizer) -> None:
    """A long prompt with a long response: the prompt keeps its budget (its last tokens, so the
    'A: ' cue survives), not one token, and the response is cut to the rest."""
    rec = {"instruction": "x" * 100, "context": "", "response": "y" * 100, "category": ""}
    done = tokenize([rec], tokenizer, TokenBudget(32, prompt=12))
    (ex,) = done.examples
    assert (done.truncated, done.dropped, done.kept) == (1, 0, [0])
    assert ex.n_prompt == 12 and len(ex.input_ids) == 32
    assert tokenizer.decode(ex.input_ids[: ex.n_prompt]).endswith("\nA: ")
    auto = tokenize([rec], tokenizer, TokenBudget(32)).examples[0]
    assert auto.n_prompt == 16  # 0 = half of max_seq_len
    short_answer = dict(rec, response="y")  # a short response leaves the prompt more room
    assert tokenize([short_answer], tokenizer, TokenBudget(32, 12)).examples[0].n_prompt == 30


def test_prompts_under_the_minimum_are_dropped_and_counted(tokenizer) -> None:
    long = {"instruction": "x" * 100, "context": "", "response": "y" * 100, "category": "a"}
    short = {"instruction": "q", "context": "", "response": "y" * 100, "category": "b"}
    # the long prompt would keep 8 < 10 tokens: dropped; the short one (8 tokens) keeps all of
    # its prompt, so it stays even though it is under the minimum
    done = tokenize([long, short, long], tokenizer, TokenBudget(64, prompt=8, min_prompt=10))
    assert done.dropped == 2 and done.kept == [1] and len(done.examples) == 1
    assert done.examples[0].n_prompt == len(tokenizer("Q: q\nA: ")["input_ids"])
    with pytest.raises(DataError, match="fewer than 10 prompt token"):
        tokenize([long], tokenizer, TokenBudget(64, prompt=8, min_prompt=10))


def test_pairs_share_the_budget_and_never_have_an_empty_prompt(tokenizer) -> None:
    rec = {"instruction": "x" * 100, "context": "", "response": "y" * 5, "rejected": "n" * 90,
           "category": ""}
    (pair,) = tokenize([rec], tokenizer, TokenBudget(40, prompt=10), "dpo").examples
    assert len(pair.prompt) == 10
    assert len(pair.prompt) + max(len(pair.chosen), len(pair.rejected)) == 40
    assert pair.chosen[-1] == tokenizer.eos_token_id  # the short answer is whole


@pytest.mark.parametrize("knobs", [{"max_prompt_len": 128}, {"max_prompt_len": -1},
                                   {"min_prompt_len": 0}, {"min_prompt_len": 128}])
def test_prompt_budget_knobs_are_checked(knobs: dict) -> None:
    with pytest.raises(ConfigError, match="prompt_len"):
        ModelConfig(max_seq_len=128, **knobs)


def test_preference_pairs_for_dpo_and_chosen_for_sft(tokenizer) -> None:
    rec = {"instruction": "q", "context": "", "response": "good", "rejected": "bad",
           "category": ""}
    (pair,), _ = tokenize_records([rec], tokenizer, 32, objective="dpo")
    assert isinstance(pair, PairExample) and pair.reference == "good"
    chosen, rejected = pair.sequences()
    assert chosen.input_ids[: chosen.n_prompt] == rejected.input_ids[: rejected.n_prompt]
    assert tokenizer.decode(pair.rejected[:-1]) == "bad"
    (ex,), _ = tokenize_records([rec], tokenizer, 32, objective="sft")
    assert isinstance(ex, Example) and tokenizer.decode(ex.input_ids[ex.n_prompt:-1]) == "good"
    plain = {"instruction": "q", "context": "", "response": "a", "category": ""}
    with pytest.raises(ConfigError, match="needs a preference dataset"):
        tokenize_records([plain], tokenizer, 32, objective="dpo")
