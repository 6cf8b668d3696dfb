"""Load instruction and preference datasets into plain records: local files or a hub name.

The public entry point of the data layer: :mod:`ecolora.data.readers` yields raw rows from
JSON / JSONL / CSV / TSV / Parquet files or the ``datasets`` hub, :mod:`ecolora.data.formats`
detects the format and reduces rows to records (see its docstring for the formats). Every
problem a user can fix is a one-line ``DataError`` that points at the row (``PATH:LINE``,
1-based) so the CLI can print it without a traceback.

An explicit ``fields`` mapping (our name -> the file's key; ours are ``instruction``,
``context``, ``response``, ``category`` and ``rejected``) overrides detection; every key it
names must then be in every record.

Path-or-hub-name rule (``_is_local_path``): ``source`` is a local file when it is a ``Path``, or
it exists, or it ends with a data-file suffix (``.json``, ``.jsonl``, ``.csv``, ...), or it starts
with ``.``, ``~`` or is absolute, or it contains a backslash or more than one ``/``. Anything else
(``name``, ``owner/name`` or ``owner/name:config``) is a Hugging Face hub dataset. So a missing
``train.jsonl`` is reported as "dataset file not found", never looked up on the hub.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from ecolora.config import parse_records
from ecolora.data.formats import MAPPING_KEYS, RECORD_KEYS, Format, convert, mapping_format
from ecolora.data.readers import KNOWN_SUFFIXES, read_hub, read_local
from ecolora.errors import ConfigError, DataError

__all__ = ["RECORD_KEYS", "load_records"]


def load_records(
    source: str | Path,
    fields: Mapping[str, str] | None = None,
    limit: int | None = None,
    category_field: str = "",
    categories: Collection[str] = (),
    records: str = "",
) -> list[dict[str, Any]]:
    """Read ``source`` (a local data file or a hub dataset name) into records.

    ``fields`` maps our names to the dataset's keys and overrides detection. ``limit`` keeps the
    first ``limit`` records; the whole source is still read and validated, so a broken line
    after the first ``limit`` records is an error, not silently ignored. ``category_field`` names
    the column whose value (a string or an integer label) becomes the record's category.

    ``records`` ('START:STOP', ``data.records``) slices the source's rows in file order before
    anything else, so one file can feed disjoint splits (HH-RLHF ``1200:`` is the DPO split of
    the realtext base); rows outside the slice are not validated. ``categories``
    (``data.categories``) then keeps only records of those categories; ``limit`` counts kept
    records.
    """
    fmt = _format_from_fields(fields) if fields is not None else None
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    start, stop = parse_records(records)
    if _is_local_path(source):
        rows = read_local(Path(source).expanduser())
    else:
        rows = read_hub(str(source))
    if records:
        rows = islice(rows, start, stop)
    out = convert(rows, fmt, None, category_field, categories)[:limit]
    if not out:
        where = f" in records {records}" if records else ""
        kept = f" of categories {', '.join(categories)}" if categories else ""
        raise DataError(f"{source}: dataset is empty (no records{kept}{where})")
    if not any(str(r["response"]).strip() for r in out):
        raise DataError(f"{source}: every response is empty ({len(out)} records); check the "
                        "response column or data.fields")
    return out


def _is_local_path(source: str | Path) -> bool:
    """Apply the documented path-or-hub-name rule (see the module docstring)."""
    if isinstance(source, Path):
        return True
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return True
    if path.suffix.lower() in KNOWN_SUFFIXES:
        return True
    if text.startswith((".", "~")) or path.is_absolute():
        return True
    return "\\" in text or text.count("/") > 1


def _format_from_fields(fields: Mapping[str, str]) -> Format:
    """Validate an explicit mapping; all keys it names become required in every record."""
    if not isinstance(fields, Mapping):
        raise ConfigError(f"field mapping must be a dict, got {type(fields).__name__}")
    unknown = sorted(set(fields) - set(MAPPING_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown field mapping key '{unknown[0]}'; expected {', '.join(MAPPING_KEYS)}"
        )
    for ours in ("instruction", "response"):
        if ours not in fields:
            raise ConfigError(f"field mapping must name '{ours}' (e.g. {{'{ours}': 'KEY'}})")
    for ours, key in fields.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"field mapping for '{ours}' must be a non-empty key name")
    return mapping_format(fields)
