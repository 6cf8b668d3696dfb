"""The project's errors. Each is a one-line, user-facing message; the CLI maps them to exit 2.

Why one hierarchy: the CLI catches ``EcoloraError`` once and prints ``error: <message>`` without a
traceback, so every layer raises these (never bare ValueError) for problems a user can fix.
"""

from __future__ import annotations


class EcoloraError(Exception):
    """Base class: a problem with the user's input, files or payloads (exit status 2)."""

    exit_code = 2


class ConfigError(EcoloraError):
    """An unknown knob, a value out of range, or an inconsistent combination."""


class DataError(EcoloraError):
    """A dataset that cannot be read: missing file, malformed line (file:line), unknown format."""


class ModelError(EcoloraError):
    """A model folder or name that cannot be loaded as a causal LM with LoRA."""


class CorruptPayloadError(EcoloraError):
    """An encoded update that fails validation: names the field and the byte offset."""

    def __init__(self, field: str, offset: int, detail: str) -> None:
        super().__init__(f"corrupt payload: field '{field}' at byte {offset}: {detail}")
        self.field = field
        self.offset = offset


class RunFailedError(EcoloraError):
    """A run that finished but trained nothing (every upload rejected): exit 3, files kept."""

    exit_code = 3
