"""Load instruction datasets into plain records: local JSON / JSON Lines files or a hub name.

Why one record shape: prompting, tokenizing and partitioning need only the instruction, an
optional context, the response and a category (for label-skew partitions), so every on-disk
format is reduced here, once, to ``{"instruction", "context", "response", "category"}`` (all
strings, "" when absent). Every problem a user can fix is a one-line ``DataError`` that points at
``PATH:LINE`` (1-based) so the CLI can print it without a traceback.

Formats, detected from the keys of the first record (checked in this order):

* Dolly:    ``instruction``, ``response``, optional ``context``, optional ``category``
* Alpaca:   ``instruction``, ``output``, optional ``input`` (-> context), optional ``category``
* Q/A:      ``question``, ``answer`` (GSM8K style; the answer text is kept as is), optional
  ``context``, optional ``category``

Optional keys may be missing or null in a record (-> ""). An explicit ``fields`` mapping (our
name -> the file's key) overrides detection; every key it names must then be in every record.

Path-or-hub-name rule (``_is_local_path``): ``source`` is a local file when it is a ``Path``, or
it exists, or it ends with a data-file suffix (``.json``, ``.jsonl``, ``.csv``, ...), or it starts
with ``.``, ``~`` or is absolute, or it contains a backslash or more than one ``/``. Anything else
(``name`` or ``owner/name``) is a Hugging Face hub dataset. So a missing ``train.jsonl`` is
reported as "dataset file not found", never looked up on the hub.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecolora.errors import ConfigError, DataError

RECORD_KEYS = ("instruction", "context", "response", "category")
JSON_SUFFIXES = frozenset({".json", ".jsonl"})
OTHER_DATA_SUFFIXES = frozenset({".csv", ".tsv", ".parquet", ".arrow", ".txt", ".gz", ".zip"})

_WS = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class _Format:
    """How one file layout maps onto a record: (our name, file key) pairs."""

    name: str
    required: tuple[tuple[str, str], ...]
    optional: tuple[tuple[str, str], ...] = ()


KNOWN_FORMATS = (
    _Format(
        "Dolly",
        (("instruction", "instruction"), ("response", "response")),
        (("context", "context"), ("category", "category")),
    ),
    _Format(
        "Alpaca",
        (("instruction", "instruction"), ("response", "output")),
        (("context", "input"), ("category", "category")),
    ),
    _Format(
        "question/answer",
        (("instruction", "question"), ("response", "answer")),
        (("context", "context"), ("category", "category")),
    ),
)

_ACCEPTED = (
    "Dolly {instruction, context, response[, category]}, "
    "Alpaca {instruction, input, output} or question/answer {question, answer}"
)


def load_records(
    source: str | Path,
    fields: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> list[dict[str, str]]:
    """Read ``source`` (a local JSON/JSONL file or a hub dataset name) into records.

    ``fields`` maps our names to the dataset's keys and overrides detection. ``limit`` keeps the
    first ``limit`` records and stops reading there (later lines are not validated), so a quick
    run on a prefix of a large file stays fast.
    """
    fmt = _format_from_fields(fields) if fields is not None else None
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    if _is_local_path(source):
        path = Path(source).expanduser()
        rows = _read_local(path)
        label = str(source)
    else:
        name = str(source)
        rows = _read_hub(name)
        label = name
    records = _convert(rows, fmt, limit)
    if not records:
        raise DataError(f"{label}: dataset is empty (no records)")
    return records


def _is_local_path(source: str | Path) -> bool:
    """Apply the documented path-or-hub-name rule (see the module docstring)."""
    if isinstance(source, Path):
        return True
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return True
    if path.suffix.lower() in JSON_SUFFIXES | OTHER_DATA_SUFFIXES:
        return True
    if text.startswith((".", "~")) or path.is_absolute():
        return True
    return "\\" in text or text.count("/") > 1


def _format_from_fields(fields: Mapping[str, str]) -> _Format:
    """Validate an explicit mapping; all keys it names become required in every record."""
    if not isinstance(fields, Mapping):
        raise ConfigError(f"field mapping must be a dict, got {type(fields).__name__}")
    unknown = sorted(set(fields) - set(RECORD_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown field mapping key '{unknown[0]}'; expected {', '.join(RECORD_KEYS)}"
        )
    for ours in ("instruction", "response"):
        if ours not in fields:
            raise ConfigError(f"field mapping must name '{ours}' (e.g. {{'{ours}': 'KEY'}})")
    for ours, key in fields.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"field mapping for '{ours}' must be a non-empty key name")
    pairs = tuple((ours, fields[ours]) for ours in RECORD_KEYS if ours in fields)
    return _Format("mapping", pairs)


# --------------------------------------------------------------------------- local files


def _read_local(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (``PATH:LINE``, parsed value) for each record in a JSON list or JSONL file."""
    text = _read_text(path)
    start = _WS.match(text, 0).end()
    if text.startswith("[", start):
        return _iter_json_array(text, start, str(path))
    return _iter_jsonl(text, str(path))


def _read_text(path: Path) -> str:
    """The file as text; a missing, unreadable or non-UTF-8 file is a DataError."""
    if not path.exists():
        raise DataError(f"dataset file not found: {path}")
    if path.is_dir():
        raise DataError(f"dataset path is a directory, expected a .json or .jsonl file: {path}")
    if path.suffix.lower() in OTHER_DATA_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type '{path.suffix}'; expected JSON Lines or a JSON list"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read dataset file {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 text ({exc.reason})") from None


def _iter_jsonl(text: str, label: str) -> Iterator[tuple[str, Any]]:
    """One JSON value per line; blank lines are skipped but still counted."""
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            _raise_single_object_hint(text, label)
            raise DataError(
                f"{label}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        yield f"{label}:{lineno}", value


def _raise_single_object_hint(text: str, label: str) -> None:
    """A pretty-printed single object is a common mistake; say so instead of 'invalid JSON'."""
    if not text.lstrip().startswith("{"):
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return
    if isinstance(value, dict):
        raise DataError(
            f"{label}: holds a single JSON object; expected a JSON list of objects "
            "or one object per line (JSON Lines)"
        )


def _iter_json_array(text: str, pos: int, label: str) -> Iterator[tuple[str, Any]]:
    """Decode a top-level JSON list element by element, so each error names its line."""
    decoder = json.JSONDecoder()
    counter = _LineCounter(text)
    pos = _WS.match(text, pos + 1).end()
    if text.startswith("]", pos):
        _expect_end(text, pos + 1, label, counter)
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(f"{label}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        yield f"{label}:{counter.line_at(pos)}", value
        pos = _WS.match(text, end).end()
        if text.startswith(",", pos):
            pos = _WS.match(text, pos + 1).end()
        elif text.startswith("]", pos):
            _expect_end(text, pos + 1, label, counter)
            return
        else:
            raise DataError(
                f"{label}:{counter.line_at(pos)}: invalid JSON (expected ',' or ']' in the list)"
            )


def _expect_end(text: str, pos: int, label: str, counter: _LineCounter) -> None:
    """Only whitespace may follow the closing bracket of the list."""
    pos = _WS.match(text, pos).end()
    if pos != len(text):
        raise DataError(f"{label}:{counter.line_at(pos)}: invalid JSON (extra data after the list)")


class _LineCounter:
    """1-based line numbers for increasing offsets, in linear total time."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._line = 1

    def line_at(self, pos: int) -> int:
        if pos < self._pos:
            return self._text.count("\n", 0, pos) + 1
        self._line += self._text.count("\n", self._pos, pos)
        self._pos = pos
        return self._line


# --------------------------------------------------------------------------- hub datasets


def _read_hub(name: str) -> Iterator[tuple[str, Any]]:
    """Load the ``train`` split of a hub dataset; any failure is one DataError line."""
    try:
        import datasets  # lazy: optional, slow to import, and never needed for local files
    except ImportError:
        raise DataError(
            f"could not load dataset '{name}': the 'datasets' package is not installed "
            "(pip install datasets), or pass a local .json/.jsonl file"
        ) from None
    try:
        dataset = datasets.load_dataset(name, split="train")
    except Exception as exc:  # any failure (offline, unknown name, bad config) is the user's
        raise DataError(f"could not load dataset '{name}': {_one_line(exc)}") from None
    return ((f"{name}[{index}]", row) for index, row in enumerate(dataset))


def _one_line(exc: BaseException) -> str:
    """The exception as one short line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    return reason if len(reason) <= 300 else reason[:297] + "..."


# --------------------------------------------------------------------------- conversion


def _convert(
    rows: Iterable[tuple[str, Any]], fmt: _Format | None, limit: int | None
) -> list[dict[str, str]]:
    """Detect the format from the first row (unless given) and convert up to ``limit`` rows."""
    records: list[dict[str, str]] = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {_json_type(row)}")
        if fmt is None:
            fmt = _detect(row, where)
        records.append(_to_record(row, fmt, where))
        if limit is not None and len(records) >= limit:
            break
    return records


def _detect(row: Mapping[str, Any], where: str) -> _Format:
    """The first known format whose required keys the row has."""
    for fmt in KNOWN_FORMATS:
        if all(key in row for _, key in fmt.required):
            return fmt
    keys = sorted(str(key) for key in row)
    shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
    raise DataError(
        f"{where}: unrecognized dataset format (keys: {shown or 'none'}); expected {_ACCEPTED}; "
        "pass a field mapping, e.g. fields={'instruction': 'prompt', 'response': 'completion'}"
    )


def _to_record(row: Mapping[str, Any], fmt: _Format, where: str) -> dict[str, str]:
    """One record in ``RECORD_KEYS`` order; optional keys that are missing or null become ""."""
    record = dict.fromkeys(RECORD_KEYS, "")
    for ours, key in fmt.required:
        if key not in row:
            raise DataError(f"{where}: missing field '{key}'")
        record[ours] = _as_string(row[key], key, where)
    for ours, key in fmt.optional:
        value = row.get(key)
        if value is not None:
            record[ours] = _as_string(value, key, where)
    return record


def _as_string(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}' must be a string, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, as a user would recognise it in the file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
