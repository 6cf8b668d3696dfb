"""Dataset formats -> one record shape, detected from the keys of the first row.

Why one record shape: prompting, tokenizing and partitioning need only an instruction, an
optional context, the response and a category (for label-skew partitions), so every format is
reduced here, once, to ``{"instruction", "context", "response", "category"}`` (strings, "" when
absent), plus, only where the data has them, ``"rejected"`` (preference pairs: ``response`` is
the chosen answer) and ``"history"`` (earlier chat turns, ``[{"role", "content"}, ...]``).

Formats, checked in this order:

* chat:        ``messages`` (``[{"role", "content"}]``, last one the assistant's reply) or
  ShareGPT ``conversations`` (``[{"from", "value"}]``)
* preference:  ``chosen`` + ``rejected`` (strings or message lists), optional ``prompt``; without
  a prompt (Anthropic HH-RLHF) the prompt is the shared transcript up to the last
  ``"\\n\\nAssistant:"``
* Dolly:       ``instruction``, ``response``, optional ``context``, ``category``
* Alpaca:      ``instruction``, ``output``, optional ``input`` (-> context), ``category``
* Q/A:         ``question``, ``answer`` (GSM8K: kept verbatim, the final answer after ``####``)
* completion:  ``prompt``, ``completion``
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ecolora.errors import DataError

RECORD_KEYS = ("instruction", "context", "response", "category")
MAPPING_KEYS = RECORD_KEYS + ("rejected",)
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant",
         "gpt": "assistant", "model": "assistant"}
HH_TURN = re.compile(r"\n\n(Human|Assistant):")


@dataclass(frozen=True)
class Format:
    """How one flat layout maps onto a record: (our name, file key) pairs."""

    name: str
    required: tuple[tuple[str, str], ...]
    optional: tuple[tuple[str, str], ...] = ()


FLAT_FORMATS = (
    Format("Dolly", (("instruction", "instruction"), ("response", "response")),
           (("context", "context"), ("category", "category"))),
    Format("Alpaca", (("instruction", "instruction"), ("response", "output")),
           (("context", "input"), ("category", "category"))),
    Format("question/answer", (("instruction", "question"), ("response", "answer")),
           (("context", "context"), ("category", "category"))),
    Format("prompt/completion", (("instruction", "prompt"), ("response", "completion")),
           (("category", "category"),)),
)
CHAT = Format("chat", (), (("category", "category"),))
PREFERENCE = Format("preference", (), (("category", "category"),))

ACCEPTED = (
    "Dolly {instruction, context, response[, category]}, Alpaca {instruction, input, output}, "
    "question/answer {question, answer}, prompt/completion, chat {messages} or preference "
    "{prompt, chosen, rejected}"
)


def mapping_format(fields: Mapping[str, str]) -> Format:
    """An explicit mapping (validated by the caller): every key it names is required."""
    return Format("mapping", tuple((ours, fields[ours]) for ours in MAPPING_KEYS if ours in fields))


def convert(rows: Iterable[tuple[str, Any]], fmt: Format | None, limit: int | None,
            category_field: str = "", categories: Collection[str] = ()) -> list[dict[str, Any]]:
    """Detect the format from the first row (unless given) and convert up to ``limit`` rows.

    ``categories`` (non-empty) keeps only records of those categories, and ``limit`` counts the
    kept ones. A name that no record of the whole file carries is a DataError naming the
    categories the file has (when ``limit`` stops the reading early, absent names are allowed:
    the rest of the file was not read).
    """
    records: list[dict[str, Any]] = []
    wanted, seen = set(categories), set()
    complete = True
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {json_type(row)}")
        if fmt is None:
            fmt = detect(row, where)
        record = to_record(row, fmt, where)
        if category_field:
            if category_field not in row:
                raise DataError(f"{where}: missing category field '{category_field}'")
            record["category"] = _as_label(row[category_field], category_field, where)
        if wanted:
            seen.add(record["category"])
            if record["category"] not in wanted:
                continue
        records.append(record)
        if limit is not None and len(records) >= limit:
            complete = False
            break
    unknown = sorted(wanted - seen)
    if unknown and complete:
        known = ", ".join(sorted(c for c in seen if c)) or "no categories"
        raise DataError(f"unknown category '{unknown[0]}' in data.categories; this data has: "
                        f"{known}")
    return records


def detect(row: Mapping[str, Any], where: str) -> Format:
    """The first known format whose keys the row has."""
    if isinstance(row.get("messages"), list) or isinstance(row.get("conversations"), list):
        return CHAT
    if "chosen" in row and "rejected" in row:
        return PREFERENCE
    for fmt in FLAT_FORMATS:
        if all(key in row for _, key in fmt.required):
            return fmt
    keys = sorted(str(key) for key in row)
    shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
    raise DataError(
        f"{where}: unrecognized dataset format (keys: {shown or 'none'}); expected {ACCEPTED}; "
        "pass a field mapping, e.g. fields={'instruction': 'prompt', 'response': 'completion'}"
    )


def to_record(row: Mapping[str, Any], fmt: Format, where: str) -> dict[str, Any]:
    """One record; optional keys that are missing or null become ""."""
    if fmt is CHAT:
        record = _chat_record(row, where)
    elif fmt is PREFERENCE:
        record = _preference_record(row, where)
    else:
        record = dict.fromkeys(RECORD_KEYS, "")
        for ours, key in fmt.required:
            if key not in row:
                raise DataError(f"{where}: missing field '{key}'")
            record[ours] = _as_string(row[key], key, where)
    for ours, key in fmt.optional:
        value = row.get(key)
        if value is not None:
            record[ours] = (_as_label(value, key, where) if ours == "category"
                            else _as_string(value, key, where))
    return record


# --------------------------------------------------------------------------- chat


def _messages(value: Any, key: str, where: str) -> list[dict[str, str]]:
    """A list of {role, content} (or ShareGPT {from, value}) with roles normalised."""
    if not isinstance(value, list):
        raise DataError(f"{where}: field '{key}' must be a list of messages, "
                        f"got {json_type(value)}")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, Mapping):
            raise DataError(f"{where}: {key}[{i}] must be an object, got {json_type(msg)}")
        role = msg.get("role", msg.get("from"))
        content = msg.get("content", msg.get("value"))
        if not isinstance(role, str) or role.lower() not in ROLES:
            raise DataError(f"{where}: {key}[{i}] has no known role (system, user, assistant)")
        if not isinstance(content, str):
            raise DataError(f"{where}: {key}[{i}] content must be a string")
        out.append({"role": ROLES[role.lower()], "content": content})
    return out


def _split_turns(messages: list[dict[str, str]], key: str, where: str) -> dict[str, Any]:
    """Last assistant message = response, the user turn before it = instruction, rest history."""
    if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        raise DataError(f"{where}: field '{key}' must end with a user turn and the assistant's "
                        "reply")
    record: dict[str, Any] = {"instruction": messages[-2]["content"], "context": "",
                              "response": messages[-1]["content"], "category": ""}
    if len(messages) > 2:
        record["history"] = messages[:-2]
    return record


def _chat_record(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    key = "messages" if "messages" in row else "conversations"
    return _split_turns(_messages(row.get(key), key, where), key, where)


# --------------------------------------------------------------------------- preference


def _preference_record(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """prompt/chosen/rejected as strings or message lists, or HH-RLHF transcripts."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if isinstance(chosen, list) and isinstance(rejected, list):
        record = _split_turns(_messages(chosen, "chosen", where), "chosen", where)
        other = _split_turns(_messages(rejected, "rejected", where), "rejected", where)
        record["rejected"] = other["response"]
        return record
    chosen = _as_string(chosen, "chosen", where)
    rejected = _as_string(rejected, "rejected", where)
    prompt = next((row[k] for k in ("prompt", "question", "instruction") if k in row), None)
    if isinstance(prompt, list):
        record = _split_turns(_messages(prompt, "prompt", where)
                              + [{"role": "assistant", "content": ""}], "prompt", where)
    elif prompt is not None:
        record = {"instruction": _as_string(prompt, "prompt", where), "context": "",
                  "response": "", "category": ""}
    else:
        return _transcript_record(chosen, rejected, where)
    record["response"], record["rejected"] = chosen, rejected
    return record


def _transcript_record(chosen: str, rejected: str, where: str) -> dict[str, Any]:
    """HH-RLHF: the prompt is the shared prefix up to the last ``\\n\\nAssistant:`` in it.

    Cutting at the last marker *inside the common prefix* (not in ``chosen``) also handles the
    few records whose answers hold further turns.
    """
    n = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        n += 1
    cut = chosen.rfind("\n\nAssistant:", 0, n)
    if cut < 0:  # no dialogue markers: the common prefix up to a word boundary is the prompt
        cut = chosen.rfind(" ", 0, n) + 1 if n < min(len(chosen), len(rejected)) else 0
        prompt, end = chosen[:cut], cut
        record = {"instruction": prompt.strip(), "context": "", "category": ""}
    else:
        end = cut + len("\n\nAssistant:")
        record = _transcript_turns(chosen[:cut], where)
    record["response"] = chosen[end:].strip()
    record["rejected"] = rejected[end:].strip()
    return record


def _transcript_turns(text: str, where: str) -> dict[str, Any]:
    """``\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c`` -> instruction c, history [a, b]."""
    parts = HH_TURN.split(text)
    turns = []
    if parts[0].strip():
        turns.append({"role": "user", "content": parts[0].strip()})
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        turns.append({"role": "user" if role == "Human" else "assistant",
                      "content": content.strip()})
    if not turns or turns[-1]["role"] != "user":
        raise DataError(f"{where}: preference transcript has no human turn before the answer")
    record: dict[str, Any] = {"instruction": turns[-1]["content"], "context": "", "category": ""}
    if len(turns) > 1:
        record["history"] = turns[:-1]
    return record


# --------------------------------------------------------------------------- values


def _as_string(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}' must be a string, got {json_type(value)}")
    return value


def _as_label(value: Any, key: str, where: str) -> str:
    """Categories may be strings or integer/boolean labels (a classification column)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int):  # bool is an int: True/False are labels too
        return str(value)
    raise DataError(f"{where}: field '{key}' must be a string or an integer label, "
                    f"got {json_type(value)}")


def json_type(value: Any) -> str:
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
