"""Help output and the docs it points to: plain defaults, every method, the spec in the repo."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecolora.cli.main import app
from ecolora.config import METHODS, knob_table

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["run", "compare", "sweep", "matrix", "inspect", "knobs"]


def _help(*args: str) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], terminal_width=100)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_escaped_markup(command):
    text = _help(command)
    assert "\\[" not in text, text
    if command == "compare":
        assert "[default: 3]" in text  # defaults are still shown, just unescaped


def test_method_help_lists_every_method():
    text = " ".join(_help("run").split())  # undo line wrapping
    assert " | ".join(METHODS) in text


def test_every_cited_spec_section_exists_in_docs_spec():
    spec = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    heads = set(re.findall(r"^## (\d+)\.", spec, flags=re.M))
    cited = {m for _, _, text in knob_table() for m in re.findall(r"INF §([\d.]+)", text)}
    assert cited, "knob help cites no spec section"
    for ref in cited:
        top, _, item = ref.partition(".")
        assert top in heads, f"§{ref} has no section in docs/spec.md"
        if item:  # §5.2 = item 2 of section 5's numbered list
            body = spec.split(f"\n## {top}.", 1)[1].split("\n## ", 1)[0]
            assert re.search(rf"^{item}\. \*\*", body, flags=re.M), f"§{ref} missing"
    assert "see section n of docs/spec.md" in _help("run")


def test_license_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert meta["license"]["text"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
