"""Raw rows from a dataset source: JSON / JSON Lines / CSV / TSV / Parquet files or a hub name.

Why a separate reader layer: every format (Alpaca, Dolly, chat, preference pairs, ...) can come
in every container, so readers only yield ``(where, row)`` pairs, where ``where`` names the row
the way a user finds it (``PATH:LINE`` for JSON text, ``PATH row N`` for tables, ``NAME[i]``
for hub rows), and :mod:`ecolora.data.formats` turns rows into records. Every problem is a
one-line ``DataError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ecolora.errors import DataError

JSON_SUFFIXES = frozenset({".json", ".jsonl"})
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".parquet"})
OTHER_DATA_SUFFIXES = frozenset({".arrow", ".txt", ".gz", ".zip"})
KNOWN_SUFFIXES = JSON_SUFFIXES | TABLE_SUFFIXES | OTHER_DATA_SUFFIXES

Rows = Iterator[tuple[str, Any]]
_WS = re.compile(r"[ \t\n\r]*")


def read_local(path: Path) -> Rows:
    """Rows of a local file, by suffix: tables (CSV/TSV/Parquet), else JSON list or JSONL."""
    if not path.exists():
        raise DataError(f"dataset file not found: {path}")
    if path.is_dir():
        raise DataError(f"dataset path is a directory, expected a data file: {path}")
    suffix = path.suffix.lower()
    if suffix in OTHER_DATA_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type '{path.suffix}'; expected .json, .jsonl, .csv, "
            ".tsv or .parquet"
        )
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return _read_parquet(path)
    text = _read_text(path)
    start = _WS.match(text, 0).end()
    if text.startswith("[", start):
        return _iter_json_array(text, start, str(path))
    return _iter_jsonl(text, str(path))


# --------------------------------------------------------------------------- tables


def _read_csv(path: Path, sep: str) -> Rows:
    """Every cell as a string (empty cells stay ""), so no column is silently turned numeric."""
    try:
        import pandas as pd
    except ImportError:
        raise DataError(f"{path}: reading CSV/TSV needs pandas (pip install 'ecolora[data]')"
                        ) from None
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return iter(())
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        kind = "TSV" if sep != "," else "CSV"
        raise DataError(f"{path}: cannot read as {kind} ({_one_line(exc)})") from None
    return ((f"{path} row {i}", row) for i, row in enumerate(frame.to_dict("records"), 1))


def _read_parquet(path: Path) -> Rows:
    """Parquet keeps nested columns (chat ``messages``) as lists of dicts."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'ecolora[data]')"
                        ) from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot read as Parquet ({_one_line(exc)})") from None
    return ((f"{path} row {i}", row) for i, row in enumerate(rows, 1))


# --------------------------------------------------------------------------- JSON text


def _read_text(path: Path) -> str:
    """The file as text; an unreadable or non-UTF-8 file is a DataError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read dataset file {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 text ({exc.reason})") from None


def _iter_jsonl(text: str, label: str) -> Rows:
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


def _iter_json_array(text: str, pos: int, label: str) -> Rows:
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


def read_hub(name: str) -> Rows:
    """The ``train`` split of hub dataset ``NAME`` or ``NAME:CONFIG`` (GSM8K is ``gsm8k:main``).

    Any failure (offline, unknown name, bad config) is one DataError line.
    """
    try:
        import datasets  # lazy: slow to import, and never needed for local files
    except ImportError:
        raise DataError(
            f"could not load dataset '{name}': the 'datasets' package is not installed "
            "(pip install datasets), or pass a local data file"
        ) from None
    repo, _, config = name.partition(":")
    try:
        if config:
            dataset = datasets.load_dataset(repo, config, split="train")
        else:
            dataset = datasets.load_dataset(repo, split="train")
    except Exception as exc:  # any failure (offline, unknown name, bad config) is the user's
        raise DataError(f"could not load dataset '{name}': {_one_line(exc)}") from None
    return ((f"{name}[{index}]", row) for index, row in enumerate(dataset))


def _one_line(exc: BaseException) -> str:
    """The exception as one short line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    return reason if len(reason) <= 300 else reason[:297] + "..."
