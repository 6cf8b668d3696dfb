"""Check a Flower run's ``-c`` overrides before anything starts, as ``ecolora run`` would.

Why: ``flwr run`` answers a misspelled key with a traceback and ``[code: 15] Invalid run
configuration`` (no key named), and a bad value only as ``finished:failed`` minutes later. The
launcher resolves the same fused run-config Flower will build (the app's
``[tool.flwr.app.config]`` plus the overrides) and validates it through ``from_run_config``, so
the user gets one line naming the key (with a close match) or the value and its reason.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

from ecolora.errors import ConfigError
from ecolora.runtime.flower.config import FlowerOptions, from_run_config


def app_defaults(app: Path) -> dict[str, Any]:
    """The app's ``[tool.flwr.app.config]``, flattened to dotted keys like Flower does."""
    from flwr.common.config import flatten_dict

    path = app / "pyproject.toml"
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8"))
        table = project["tool"]["flwr"]["app"]["config"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a Flower app project ({type(exc).__name__}: "
                          f"{str(exc)[:120]})") from None
    return flatten_dict(table)


def parse_overrides(config: str) -> dict[str, Any]:
    """``'k=v k2=v2'`` or a TOML file path, as ``flwr run -c`` reads it."""
    from flwr.common.config import parse_config_args

    if not config.strip():
        return {}
    try:
        return parse_config_args([config])
    except Exception as exc:  # flwr raises ValueError/TOMLDecodeError/click errors alike
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"-c {config!r}: not 'key=value' TOML pairs ({reason[:160]})") from None


def check_run_config(app: Path, config: str) -> tuple[dict[str, Any], Any, FlowerOptions]:
    """(fused run-config, RunConfig, runtime options); a ``ConfigError`` names what is wrong."""
    defaults = app_defaults(app)
    overrides = parse_overrides(config)
    for key in overrides:
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else \
                "; `ecolora knobs` lists the knobs, apps/flower/pyproject.toml the keys"
            raise ConfigError(f"unknown run-config key {key!r}{hint}")
    fused = {**defaults, **overrides}
    cfg, opts = from_run_config(fused)
    return fused, cfg, opts
