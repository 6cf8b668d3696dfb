"""Tests for ecolora.data.files: formats, mappings, the path-or-hub rule and every error."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from ecolora.data.files import load_records
from ecolora.errors import ConfigError, DataError

DOLLY_15K = Path(__file__).resolve().parents[2] / "shared" / "data" / "dolly-15k.jsonl"


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def record(instruction: str, context: str, response: str, category: str = "") -> dict[str, str]:
    return {
        "instruction": instruction,
        "context": context,
        "response": response,
        "category": category,
    }


def assert_one_line(exc: pytest.ExceptionInfo[BaseException]) -> None:
    message = str(exc.value)
    assert message and "\n" not in message


# --------------------------------------------------------------------------- formats


def test_alpaca_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "alpaca.jsonl",
        [
            {"instruction": "Add", "input": "1 2", "output": "3"},
            {"instruction": "Greet", "input": "", "output": "Hi"},
        ],
    )
    assert load_records(path) == [record("Add", "1 2", "3"), record("Greet", "", "Hi")]


def test_dolly_jsonl_with_category_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "dolly.jsonl"
    rows = [
        {"instruction": "Q1", "context": "C1", "response": "R1", "category": "open_qa"},
        {"instruction": "Q2", "context": "", "response": "R2", "category": "summarization"},
    ]
    path.write_text("\n" + json.dumps(rows[0]) + "\n\n   \n" + json.dumps(rows[1]) + "\n\n")
    assert load_records(str(path)) == [
        record("Q1", "C1", "R1", "open_qa"),
        record("Q2", "", "R2", "summarization"),
    ]


def test_dolly_optional_keys_missing_or_null(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"instruction": "Q", "response": "R"},
            {"instruction": "Q", "response": "R", "context": None, "category": None},
        ],
    )
    assert load_records(path) == [record("Q", "", "R"), record("Q", "", "R")]


def test_question_answer_keeps_answer_verbatim(tmp_path: Path) -> None:
    answer = "She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"
    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "How many?", "answer": answer}])
    assert load_records(path) == [record("How many?", "", answer)]


def test_json_list_file(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    rows = [
        {"instruction": "A", "input": "x", "output": "1"},
        {"instruction": "B", "input": "", "output": "2"},
    ]
    path.write_text(json.dumps(rows, indent=2))
    assert load_records(path) == [record("A", "x", "1"), record("B", "", "2")]


def test_json_list_empty_and_jsonl_in_a_json_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("[ ]\n")
    with pytest.raises(DataError, match="empty"):
        load_records(empty)
    lines = write_jsonl(tmp_path / "lines.json", [{"question": "q", "answer": "a"}])
    assert load_records(lines) == [record("q", "", "a")]


def test_utf8_bom_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    row = {"instruction": "Übersetze \u2028", "input": "", "output": "日本"}
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row, ensure_ascii=False).encode() + b"\n")
    assert load_records(path) == [record("Übersetze \u2028", "", "日本")]


def test_explicit_mapping_overrides_detection(tmp_path: Path) -> None:
    # The file also has Dolly-looking keys; the mapping must win.
    path = write_jsonl(
        tmp_path / "custom.jsonl",
        [
            {
                "prompt": "P",
                "completion": "C",
                "ctx": "X",
                "topic": "T",
                "instruction": "ignored",
                "response": "ignored",
            }
        ],
    )
    fields = {
        "instruction": "prompt",
        "response": "completion",
        "context": "ctx",
        "category": "topic",
    }
    assert load_records(path, fields=fields) == [record("P", "X", "C", "T")]
    minimal = {"instruction": "prompt", "response": "completion"}
    assert load_records(path, fields=minimal) == [record("P", "", "C")]


def test_explicit_mapping_requires_every_named_key(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "custom.jsonl",
        [{"prompt": "P", "completion": "C", "ctx": "X"}, {"prompt": "P", "completion": "C"}],
    )
    fields = {"instruction": "prompt", "response": "completion", "context": "ctx"}
    with pytest.raises(DataError, match=r"custom\.jsonl:2: missing field 'ctx'$"):
        load_records(path, fields=fields)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"response": "b"}, "must name 'instruction'"),
        ({"instruction": "a"}, "must name 'response'"),
        (
            {"instruction": "a", "response": "b", "answer": "c"},
            "unknown field mapping key 'answer'",
        ),
        ({"instruction": "a", "response": ""}, "non-empty"),
    ],
)
def test_invalid_mapping_is_config_error(
    tmp_path: Path, fields: dict[str, str], match: str
) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"a": "1", "b": "2"}])
    with pytest.raises(ConfigError, match=match):
        load_records(path, fields=fields)


def test_limit_keeps_a_prefix_but_validates_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    good = [json.dumps({"question": f"q{i}", "answer": f"a{i}"}) for i in range(3)]
    path.write_text("\n".join(good) + "\n")
    assert [r["instruction"] for r in load_records(path, limit=2)] == ["q0", "q1"]
    assert len(load_records(path, limit=3)) == 3
    path.write_text("\n".join([*good, "{broken"]) + "\n")  # issue 15: no silent acceptance
    for limit in (2, None):
        with pytest.raises(DataError, match=":4: invalid JSON"):
            load_records(path, limit=limit)
    with pytest.raises(ConfigError, match="limit"):
        load_records(path, limit=0)


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as exc:
        load_records(missing)
    assert str(exc.value) == f"dataset file not found: {missing}"


def test_missing_relative_jsonl_is_not_a_hub_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)  # a hub lookup would fail differently
    for name in ("train.jsonl", "data.json", "owner/name.jsonl", "a/b/c", "./train"):
        with pytest.raises(DataError, match="^dataset file not found: "):
            load_records(name)


def test_malformed_line_reports_line_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    ok = json.dumps({"instruction": "i", "input": "", "output": "o"})
    path.write_text(f'{ok}\n\n{ok}\n{{"instruction": "i", "output": }}\n{ok}\n')
    with pytest.raises(DataError, match=r"^.*bad\.jsonl:4: invalid JSON \(") as exc:
        load_records(path)
    assert_one_line(exc)


def test_malformed_json_list_reports_line_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"question": "q", "answer": "a"},\n  {"question": "q",, }\n]\n')
    with pytest.raises(DataError, match=r"bad\.json:3: invalid JSON"):
        load_records(path)
    path.write_text('[\n  {"question": "q", "answer": "a"}\n  {"question": "q"}\n]\n')
    with pytest.raises(DataError, match=r"bad\.json:3: invalid JSON \(expected ','"):
        load_records(path)


def test_json_list_element_errors_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text('[\n  {"question": "q", "answer": "a"},\n\n  {"question": "q"}\n]')
    with pytest.raises(DataError, match=r"list\.json:4: missing field 'answer'$"):
        load_records(path)


def test_single_object_json_file_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"question": "q", "answer": "a"}, indent=2))
    with pytest.raises(DataError, match="single JSON object"):
        load_records(path)


def test_missing_field_names_line_and_key(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"instruction": "i", "input": "", "output": "o"},
            {"instruction": "i", "input": ""},
        ],
    )
    with pytest.raises(DataError) as exc:
        load_records(path)
    assert str(exc.value) == f"{path}:2: missing field 'output'"


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "n.jsonl", [{"question": "q", "answer": "a"}, ["q", "a"]])
    with pytest.raises(DataError, match=r"n\.jsonl:2: expected a JSON object, got list$"):
        load_records(path)


@pytest.mark.parametrize(
    ("value", "kind"), [(3, "number"), (None, "null"), (["x"], "list"), (True, "boolean")]
)
def test_non_string_value(tmp_path: Path, value: object, kind: str) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [{"question": "q", "answer": "a"}, {"question": "q", "answer": value}],
    )
    with pytest.raises(
        DataError, match=rf"t\.jsonl:2: field 'answer' must be a string, got {kind}$"
    ):
        load_records(path)


def test_non_string_optional_value(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"instruction": "q", "response": "a", "context": 7}])
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'context' must be a string"):
        load_records(path)


def test_integer_category_is_a_label_but_a_list_is_not(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"instruction": "q", "response": "a", "category": 7}])
    assert load_records(path)[0]["category"] == "7"
    path = write_jsonl(tmp_path / "u.jsonl", [{"instruction": "q", "response": "a",
                                               "category": [1]}])
    with pytest.raises(DataError, match=r"u\.jsonl:1: field 'category' must be a string or an"):
        load_records(path)


def test_unrecognized_format_lists_accepted_keys(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "u.jsonl", [{"text": "p", "label": "c"}])
    with pytest.raises(DataError) as exc:
        load_records(path)
    message = str(exc.value)
    assert_one_line(exc)
    assert message.startswith(f"{path}:1: unrecognized dataset format (keys: label, text)")
    for expected in ("instruction, input, output", "instruction, context, response"):
        assert expected in message
    assert "question, answer" in message and "field mapping" in message


def test_empty_dataset(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty\.jsonl: dataset is empty"):
        load_records(path)


def test_directory_and_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        load_records(tmp_path)
    arrow = tmp_path / "d.arrow"
    arrow.write_text("instruction,response\n")
    with pytest.raises(DataError, match="unsupported file type '.arrow'"):
        load_records(arrow)


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "a"}\n{"question": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not valid UTF-8"):
        load_records(path)


# --------------------------------------------------------------------------- hub names


def fake_datasets(monkeypatch: pytest.MonkeyPatch, load: object) -> list[tuple[object, object]]:
    """Install a stand-in ``datasets`` module (no network) and record its calls."""
    calls: list[tuple[object, object]] = []

    def load_dataset(name: object, split: object = None) -> object:
        calls.append((name, split))
        if isinstance(load, BaseException):
            raise load
        return load

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    return calls


def test_hub_name_loads_train_split(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    rows = [
        {"instruction": "i", "context": "c", "response": "r", "category": "k"},
        {"instruction": "j", "context": "", "response": "s", "category": "k"},
    ]
    calls = fake_datasets(monkeypatch, rows)
    assert load_records("databricks/databricks-dolly-15k", limit=1) == [record("i", "c", "r", "k")]
    assert calls == [("databricks/databricks-dolly-15k", "train")]


def test_hub_rows_are_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    fake_datasets(monkeypatch, [{"question": "q", "answer": "a"}, {"question": "q"}])
    with pytest.raises(DataError, match=r"^owner/qa\[1\]: missing field 'answer'$"):
        load_records("owner/qa")
    fake_datasets(monkeypatch, [{"text": "p"}])
    with pytest.raises(DataError, match="unrecognized dataset format"):
        load_records("owner/qa")
    assert load_records("owner/qa", fields={"instruction": "text", "response": "text"}) == [
        record("p", "", "p")
    ]


def test_hub_failure_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    fake_datasets(monkeypatch, ConnectionError("offline\nlong traceback-ish detail"))
    with pytest.raises(DataError) as exc:
        load_records("owner/name")
    assert str(exc.value) == "could not load dataset 'owner/name': ConnectionError: offline"


def test_hub_without_datasets_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match="^could not load dataset 'gsm8k': .*not installed") as exc:
        load_records("gsm8k")
    assert_one_line(exc)


# --------------------------------------------------------------------------- real data


def test_real_dolly_15k() -> None:
    if not DOLLY_15K.is_file():
        pytest.skip(f"{DOLLY_15K} not present")
    records = load_records(DOLLY_15K)
    assert len(records) == 15_011
    assert len({r["category"] for r in records}) == 8
    assert all(r["instruction"] and r["response"] for r in records)
