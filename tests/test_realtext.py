"""The realtext base (``model.name = "realtext"``), its build script and the data split knobs.

Why: the realtext base is pretrained on part of the shared data, so benchmarks on the rest are
only fair if the split holds (``data.categories`` / ``data.records`` select the fine-tuning and
DPO parts); these tests pin the knobs, the shipped asset and a short run on it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ecolora.config import DataConfig, parse_records
from ecolora.data.files import load_records
from ecolora.errors import ConfigError, DataError, ModelError
from ecolora.train.model import REALTEXT_BASE_DIR, resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ASSET_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "generation_config.json", "build_info.json")
CATS = ("open_qa", "general_qa", "brainstorming", "creative_writing", "closed_qa",
        "classification", "information_extraction", "summarization")


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_realtext_base",
                                                  ROOT / "scripts" / "build_realtext_base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dolly_rows(n: int) -> list[dict[str, str]]:
    """Dolly-like records cycling through the 8 categories (answers are short words)."""
    words = ("red", "blue", "green", "small", "large", "river", "stone", "light")
    return [{"instruction": f"Name the {words[i % 8]} thing number {i}.",
             "context": f"The {words[(i + 3) % 8]} river runs past the stone." if i % 2 else "",
             "response": f"The answer is {words[(i + 5) % 8]}.", "category": CATS[i % 8]}
            for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------- data knobs


def test_categories_keep_only_named_ones_and_limit_counts_kept(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", dolly_rows(40))
    recs = load_records(path, categories=["closed_qa", "summarization"])
    assert len(recs) == 10 and {r["category"] for r in recs} == {"closed_qa", "summarization"}
    assert len(load_records(path, categories=["closed_qa"], limit=3)) == 3


def test_unknown_category_names_the_known_ones(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", dolly_rows(16))
    with pytest.raises(DataError) as exc:
        load_records(path, categories=["closed_qa", "poetry"])
    message = one_line(exc)
    assert "poetry" in message and "closed_qa" in message and "summarization" in message


def test_records_slice_in_file_order_before_categories(tmp_path: Path) -> None:
    rows = dolly_rows(20)
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert [r["instruction"] for r in load_records(path, records="5:8")] == [
        rows[i]["instruction"] for i in (5, 6, 7)]
    assert len(load_records(path, records="12:")) == 8
    assert len(load_records(path, records=":4")) == 4
    sliced = load_records(path, records="8:", categories=["open_qa"])  # rows 8 and 16
    assert [r["instruction"] for r in sliced] == [rows[8]["instruction"], rows[16]["instruction"]]
    with pytest.raises(DataError) as exc:
        load_records(path, records="30:40")
    assert "30:40" in one_line(exc)


@pytest.mark.parametrize("spec", ["abc", "5", "3:1", "2:2", "-1:", "1:x", "1:2:3"])
def test_bad_records_spec_is_one_line_config_error(spec: str) -> None:
    with pytest.raises(ConfigError) as exc:
        DataConfig(records=spec)
    assert "records" in one_line(exc)


def test_records_and_categories_config_values() -> None:
    assert parse_records("") == (0, None) and parse_records("1200:") == (1200, None)
    assert parse_records(" :50") == (0, 50)
    assert DataConfig(categories=["closed_qa"], records="0:10").records == "0:10"
    with pytest.raises(ConfigError) as exc:
        DataConfig(categories=[""])
    one_line(exc)


# --------------------------------------------------------------------------- shipped asset


@pytest.fixture(scope="module")
def asset() -> Path:
    if not (REALTEXT_BASE_DIR / "model.safetensors").is_file():
        pytest.fail(f"{REALTEXT_BASE_DIR} not built (python scripts/build_realtext_base.py)")
    return REALTEXT_BASE_DIR


def test_asset_files_size_and_build_info(asset: Path) -> None:
    assert resolve_model_path("realtext") == str(asset)
    for name in ASSET_FILES:
        assert (asset / name).is_file(), name
    size = sum(p.stat().st_size for p in asset.iterdir() if p.is_file())
    assert size <= 20e6
    info = json.loads((asset / "build_info.json").read_text())
    assert info["perplexity"]["heldout_pretrain"] < 500  # far below the 4096-token vocab
    assert len(info["greedy_samples"]) >= 2
    cfg = json.loads((asset / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_asset_tokenizer_and_model_work(asset: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ecolora.train.batches import tokenize_records

    tok = AutoTokenizer.from_pretrained(asset)
    text = "The quick brown fox jumps over the lazy dog. Isn't it?\nYes: 42%."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and len(ids) < len(text) / 2  # subwords, not characters
    assert tok.eos_token == "<eos>" and tok.pad_token == "<pad>" and not tok.chat_template
    rec = {"instruction": "Summarize this.", "context": "A long text.", "response": "Short."}
    (ex,), _ = tokenize_records([rec], tok, 64)
    assert tok.decode(ex.input_ids[: ex.n_prompt]) == "Q: Summarize this.\nA long text.\nA: "
    assert ex.input_ids[-1] == tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(asset, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == json.loads((asset / "build_info.json").read_text())["params"]
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids]))
    assert out.logits.shape == (1, len(ids), len(tok)) and out.loss.item() < 6.0


def test_ecolora_run_on_realtext(asset: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "dolly.jsonl", dolly_rows(48))
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "ecolora.cli.main", "run", "--model", "realtext", "--dataset",
         str(data), "--out", str(out), "--rounds", "1", "--clients", "2", "--quiet",
         "--set", "train_examples=24", "--set", "eval_examples=4", "--set", "local_steps=1",
         "--set", "model.max_seq_len=64", "--set", "eval_samples=1",
         "--set", "model.max_new_tokens=4", "--set", "model.threads=1"],
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["round"] == 1 and rows[0]["eval_loss"] > 0
    cfg = json.loads((out / "summary.json").read_text())["config"]["model"]
    assert cfg["name"] == "realtext"


def test_missing_realtext_base_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    import ecolora.train.model as model_mod

    monkeypatch.setattr(model_mod, "REALTEXT_BASE_DIR", tmp_path / "nothing")
    with pytest.raises(ModelError) as exc:
        model_mod.resolve_model_path("realtext")
    assert "build_realtext_base.py" in one_line(exc)


# --------------------------------------------------------------------------- build script


def test_quick_build_is_deterministic(tmp_path: Path) -> None:
    """--steps N --out DIR on a tiny stand-in for the shared data folder."""
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "dolly-15k.jsonl", dolly_rows(80))
    hh = [{"chosen": f"\n\nHuman: Is {i} big?\n\nAssistant: No, {i} is small.",
           "rejected": f"\n\nHuman: Is {i} big?\n\nAssistant: Yes."} for i in range(1210)]
    write_jsonl(data / "hh-rlhf-harmless-base-test.jsonl", hh)
    build = _load_build_script()
    small = ["--data-dir", str(data), "--steps", "2", "--batch", "2", "--seq", "32",
             "--vocab", "300", "--hidden", "64", "--layers", "1", "--inter", "96",
             "--eval-docs", "4", "--threads", "1"]
    for name in ("a", "b"):
        assert build.main([*small, "--out", str(tmp_path / name)]) == 0
    for name in ASSET_FILES[:4]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    info = json.loads((tmp_path / "a" / "build_info.json").read_text())
    assert info["data"]["dpo"]["hh_records"] == "1200:" and info["args"]["steps"] == 2
    assert set(info["perplexity"]) >= {"heldout_pretrain", "finetune_categories", "hh_dpo_split"}


# --------------------------------------------------------------------------- the real split


def test_shared_data_split_is_disjoint() -> None:
    if not (SHARED / "dolly-15k.jsonl").is_file() or not (
            SHARED / "hh-rlhf-harmless-base-test.jsonl").is_file():
        pytest.skip(f"{SHARED} not present")
    build = _load_build_script()
    assert not set(build.PRETRAIN_CATEGORIES) & set(build.FINETUNE_CATEGORIES)
    assert set(build.PRETRAIN_CATEGORIES) | set(build.FINETUNE_CATEGORIES) == set(CATS)
    split = build.split_data(SHARED, 0, 0.03)
    pretrain = set(split["train"]) | set(split["heldout"])
    assert not set(split["train"]) & set(split["heldout"])
    assert not pretrain & set(split["finetune"]) and not pretrain & set(split["dpo"])
    # the knobs select exactly the fine-tuning and DPO parts
    fine = load_records(SHARED / "dolly-15k.jsonl", categories=list(build.FINETUNE_CATEGORIES))
    assert len(fine) == 1773 + 2136 + 1506 + 1188
    assert {build.dolly_text(r) for r in fine} == set(split["finetune"])
    dpo = load_records(SHARED / "hh-rlhf-harmless-base-test.jsonl",
                       records=f"{build.HH_PRETRAIN}:")
    assert len(dpo) == 2312 - build.HH_PRETRAIN


def test_run_setup_applies_the_knobs(tmp_path: Path) -> None:
    from ecolora.config import RunConfig
    from ecolora.runtime.setup import load_data

    rows = dolly_rows(80)
    train_file = write_jsonl(tmp_path / "d.jsonl", rows)
    data = DataConfig(dataset=str(train_file), categories=["closed_qa", "summarization"],
                      records="0:40", eval_examples=2)
    train, evals = load_data(RunConfig(data=data))
    assert len(train) + len(evals) == 10  # rows 0..39: 5 of each of the two categories
    assert {r["category"] for r in train + evals} == {"closed_qa", "summarization"}
    eval_file = write_jsonl(tmp_path / "e.jsonl", rows)
    data = DataConfig(dataset=str(train_file), eval_dataset=str(eval_file),
                      categories=["closed_qa"], eval_examples=3)
    _, evals = load_data(RunConfig(data=data))
    assert [r["category"] for r in evals] == ["closed_qa"] * 3
