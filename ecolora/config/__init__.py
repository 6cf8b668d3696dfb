"""One run configuration, validated once at the edge (CLI, TOML file, Flower run-config).

Sections are frozen dataclasses, each field with a default and a ``help`` string; fields whose
default is a *reconstruction* of the EcoLoRA paper (spec tag [INF], `docs/spec.md`)
say so with ``[INF §n]`` in their help, so ``ecolora knobs`` shows users exactly which defaults are
guesses. Unknown keys fail with a close-match hint, as nanoGPT's configurator does.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ecolora.config.compress import CompressConfig
from ecolora.config.knobs import METHODS
from ecolora.config.sections import DataConfig, FedConfig, ModelConfig, NetworkConfig, parse_records
from ecolora.errors import ConfigError

__all__ = ["METHODS", "SECTIONS", "CompressConfig", "DataConfig", "FedConfig", "ModelConfig",
           "NetworkConfig", "RunConfig", "knob_table", "load_toml", "merge", "parse_records",
           "parse_set"]


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "fed": FedConfig,
    "compress": CompressConfig,
    "network": NetworkConfig,
}


@dataclass(frozen=True)
class RunConfig:
    method: str = "ecolora"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def method_compress(self) -> CompressConfig:
        """The compress section the run's method is built with: under objective=dpo the
        server steps at ``compress.dpo_server_lr``, as the client uses ``fed.dpo_lr``."""
        if self.fed.objective == "dpo":
            return replace(self.compress, server_lr=self.compress.dpo_server_lr)
        return self.compress

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Build from a nested dict (TOML, JSON, Flower run-config); unknown keys are errors."""
        raw = dict(raw)
        method = raw.pop("method", "ecolora")
        sections = {}
        for key, value in raw.items():
            if key not in SECTIONS:
                raise ConfigError(_unknown("section", key, list(SECTIONS) + ["method"]))
            if not isinstance(value, dict):
                raise ConfigError(f"config section [{key}] must be a table, got {value!r}")
            sections[key] = _build_section(SECTIONS[key], value)
        return cls(method=method, **sections)


def _unknown(kind: str, key: str, known: list[str]) -> str:
    near = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"unknown {kind} {key!r}{hint}"


def _coerce(section: type, name: str, value: Any) -> Any:
    f = {f.name: f for f in fields(section)}[name]
    default = f.default if f.default is not MISSING else f.default_factory()
    kind = type(default)
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "1", "on", "yes"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "off", "no"):
            return False
        if isinstance(value, bool):
            return value
    elif kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is str and isinstance(value, str):
        return value
    elif kind is list and isinstance(value, list | str):
        return [v for v in value.split(",") if v] if isinstance(value, str) else list(value)
    elif kind is dict and isinstance(value, dict):
        return dict(value)
    elif isinstance(value, str) and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ConfigError(f"`{name}` expects {kind.__name__}, got {value!r}")


def _build_section(section: type, values: dict[str, Any], base: Any = None) -> Any:
    names = [f.name for f in fields(section)]
    coerced = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(_unknown("knob", key, names))
        coerced[key] = _coerce(section, key, value)
    return replace(base, **coerced) if base is not None else section(**coerced)


def parse_set(items: list[str]) -> dict[str, dict[str, str]]:
    """Parse ``--set section.key=value`` (or a bare ``key`` when only one section has it)."""
    out: dict[str, dict[str, Any]] = {}
    owners: dict[str, list[str]] = {}
    for sec, cls in SECTIONS.items():
        for f in fields(cls):
            owners.setdefault(f.name, []).append(sec)
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." in key:
            sec, name = key.split(".", 1)
            if sec not in SECTIONS:
                raise ConfigError(_unknown("section", sec, list(SECTIONS)))
        else:
            if key not in owners:
                raise ConfigError(_unknown("knob", key, list(owners)))
            if len(owners[key]) > 1:
                raise ConfigError(f"knob {key!r} is ambiguous; write one of "
                                  + ", ".join(f"{s}.{key}" for s in owners[key]))
            sec, name = owners[key][0], key
        if name == "fields" and sec == "data":
            value = _parse_mapping(value)
        out.setdefault(sec, {})[name] = value
    return out


def _parse_mapping(text: str) -> dict[str, str]:
    """``instruction:prompt,response:completion`` -> {'instruction': 'prompt', ...}."""
    mapping = {}
    for pair in text.split(","):
        if ":" not in pair:
            raise ConfigError(f"data.fields expects ours:theirs pairs, got {pair!r}")
        ours, theirs = pair.split(":", 1)
        mapping[ours.strip()] = theirs.strip()
    return mapping


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: invalid TOML ({exc})") from None


def merge(base: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply nested overrides (already split into sections) on top of ``base``."""
    overrides = dict(overrides)
    method = overrides.pop("method", base.method)
    changed = {}
    for sec, values in overrides.items():
        if sec not in SECTIONS:
            raise ConfigError(_unknown("section", sec, list(SECTIONS)))
        if not isinstance(values, dict):
            raise ConfigError(f"config section [{sec}] must be a table, got {values!r}")
        changed[sec] = _build_section(SECTIONS[sec], values, getattr(base, sec))
    return replace(base, method=method, **changed)


def knob_table() -> list[tuple[str, str, str]]:
    """(section.key, default, help) for every knob: feeds `--help` and the README."""
    rows = []
    for sec, cls in SECTIONS.items():
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()
            help_text = f.metadata.get("help", "")
            if f.metadata.get("choices"):
                help_text += f" {{{', '.join(f.metadata['choices'])}}}"
            rows.append((f"{sec}.{f.name}", repr(default), help_text))
    return rows
