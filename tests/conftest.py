"""Shared fixtures: a tiny random Llama with a character tokenizer, and small dataset files.

Everything is built locally in a temp folder: no hub, no download.
"""

from __future__ import annotations

import json
import string
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CHARS = string.ascii_letters + string.digits + " \n:.,?!+-=*#'\"()/_"


def build_tiny_model(folder: Path, layers: int = 2, hidden: int = 32) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def alpaca_rows(n: int) -> list[dict]:
    cats = ["add", "echo", "upper", "count"]
    rows = []
    for i in range(n):
        cat = cats[i % 4]
        word = "abcdefgh"[i % 5 : i % 5 + 3]
        out = {"add": str(i % 7 + 2), "echo": word, "upper": word.upper(), "count": "3"}[cat]
        rows.append({"instruction": f"{cat} {i % 7} {word}", "input": "", "output": out,
                     "category": cat})
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def alpaca_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "alpaca.jsonl", alpaca_rows(200))


def _run_cli(*args: object) -> int:
    """``ecolora ARGS`` in this process; returns the exit status."""
    from ecolora.cli.main import main

    old = sys.argv
    sys.argv = ["ecolora", *map(str, args)]
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = old
    return 0


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., int]:
    return _run_cli
