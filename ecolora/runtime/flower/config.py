"""Flower run-config (flat, dotted keys) -> the project's validated ``RunConfig``.

Flower flattens ``[tool.flwr.app.config]`` and every ``-c 'k=v'`` override into one flat dict
(``{"fed.rounds": 2, "compress.rho_b": 0.2, "method": "ecolora"}``). Splitting the dotted keys back
into sections is all this module does; validation, coercion and close-match hints for unknown
knobs stay in ``RunConfig.from_dict``, so a Flower run rejects exactly what ``ecolora run`` does.
Keys under ``flower.`` are options of this runtime (run folder, timeouts), not of the method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecolora.config import RunConfig, parse_set
from ecolora.errors import ConfigError

RUNTIME_PREFIX = "flower."


@dataclass(frozen=True)
class FlowerOptions:
    """Runtime-only knobs: they change where results go and how long the server waits."""

    out: str = ""  # run folder on the ServerApp's machine; "" = runs/flower-METHOD-seedS
    round_timeout: float = 600.0  # seconds a round waits for replies before closing without them
    join_timeout: float = 120.0  # seconds to wait for nodes holding every partition
    min_clients: int = 0  # 0 = all K partitions must have joined before round 1
    resume: bool = False  # continue the run folder from its checkpoint (if it has one)

    def out_dir(self, cfg: RunConfig) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / f"flower-{cfg.method}-seed{cfg.fed.seed}"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ValueError(value)


_OPTION_KEYS = {"out": str, "round-timeout": float, "join-timeout": float, "min-clients": int,
                "resume": _bool}


def nest(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"fed.rounds": 2, "method": "x"}`` -> ``{"fed": {"rounds": 2}, "method": "x"}``.

    ``data.fields`` is a mapping, which Flower's scalar run-config cannot hold: it is written as
    ``"instruction:prompt,response:out"`` and parsed by the CLI's own ``parse_set``.
    """
    out: dict[str, Any] = {}
    for key, value in run_config.items():
        if key.startswith(RUNTIME_PREFIX):
            continue
        if key == "method":
            out["method"] = value
            continue
        section, dot, name = key.partition(".")
        if not dot or not name:
            raise ConfigError(f"run-config key {key!r} must be 'section.knob' (e.g. fed.rounds)")
        if (section, name) == ("data", "fields"):
            value = parse_set([f"data.fields={value}"])["data"]["fields"] if value else {}
        elif name.startswith("fields.") and section == "data":  # [tool.flwr.app.config.data.fields]
            out.setdefault("data", {}).setdefault("fields", {})[name[len("fields."):]] = value
            continue
        out.setdefault(section, {})[name] = value
    return out


def runtime_options(run_config: Mapping[str, Any]) -> FlowerOptions:
    """Parse the ``flower.*`` keys; unknown ones fail like unknown knobs do."""
    values: dict[str, Any] = {}
    for key, value in run_config.items():
        if not key.startswith(RUNTIME_PREFIX):
            continue
        name = key[len(RUNTIME_PREFIX):]
        if name not in _OPTION_KEYS:
            raise ConfigError(f"unknown run-config key {key!r}; known: "
                              + ", ".join(RUNTIME_PREFIX + k for k in _OPTION_KEYS))
        kind = _OPTION_KEYS[name]
        try:
            values[name.replace("-", "_")] = kind(value)
        except (TypeError, ValueError):
            what = "true or false" if kind is _bool else kind.__name__
            raise ConfigError(f"`{key}` expects {what}, got {value!r}") from None
    opts = FlowerOptions(**values)
    if opts.round_timeout <= 0 or opts.join_timeout <= 0 or opts.min_clients < 0:
        raise ConfigError("flower.round-timeout and flower.join-timeout must be > 0, "
                          "flower.min-clients >= 0")
    return opts


def from_run_config(run_config: Mapping[str, Any]) -> tuple[RunConfig, FlowerOptions]:
    """The validated run configuration and runtime options of one Flower run."""
    cfg = RunConfig.from_dict(nest(run_config))
    return cfg, runtime_options(run_config)
