"""Tokenizer folders (the bundled bases, the exported adapter) load on transformers 4.x too:
none names transformers 5's ``TokenizersBackend`` class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecolora.data.embedded import EMBEDDED_BASE_DIR
from ecolora.train.portable import PORTABLE_CLASS, make_tokenizer_portable

ASSETS = Path(EMBEDDED_BASE_DIR).parent


@pytest.mark.parametrize("base", ["embedded_base", "realtext_base"])
def test_bundled_tokenizers_name_a_class_both_majors_know(base: str) -> None:
    cfg = json.loads((ASSETS / base / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == PORTABLE_CLASS and "backend" not in cfg


def test_a_saved_tokenizer_is_rewritten_and_still_encodes_alike(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(EMBEDDED_BASE_DIR)
    tok.save_pretrained(tmp_path)
    path = tmp_path / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"], cfg["backend"] = "TokenizersBackend", "tokenizers"  # as 5.x writes
    path.write_text(json.dumps(cfg), encoding="utf-8")
    make_tokenizer_portable(tmp_path)
    cfg = json.loads(path.read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == PORTABLE_CLASS and "backend" not in cfg
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "Q: add 3 and 4\nA: "
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert (again.pad_token_id, again.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    make_tokenizer_portable(tmp_path / "missing")  # no folder, nothing to do
