"""How a knob is declared and checked: the helpers every config section shares."""

from __future__ import annotations

import math
from dataclasses import field, fields
from typing import Any

from ecolora.errors import ConfigError

METHODS = ("fedit", "ffa-lora", "fedsa-lora", "topk-ef", "ecolora", "eco-seg-only", "eco-no-ab",
           "eco-no-ef", "eco-no-golomb")  # ecolora/methods/variants.py says what each sends


def _knob(default: Any, help: str, choices: tuple | None = None) -> Any:
    meta = {"help": help, "choices": choices}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_choices(section: object) -> None:
    for f in fields(section):
        choices = f.metadata.get("choices")
        value = getattr(section, f.name)
        if choices and value not in choices:
            raise ConfigError(f"`{f.name}` must be one of {', '.join(choices)}; got {value!r}")


def _check_range(name: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    ok = (lo < value if lo_open else lo <= value) and value <= hi and math.isfinite(value)
    if not ok:
        left = "(" if lo_open else "["
        raise ConfigError(f"`{name}` must be in {left}{lo}, {hi}], got {value}")

