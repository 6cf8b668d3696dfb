"""Server-state checkpoints of a simulated run, and resuming from them.

Why one file: the tensors (global adapters, per-client error-feedback residuals and local
tensors, the method's ``ServerState``, torch's RNG state) and the JSON state (round, metric rows
so far, initial eval, sync bookkeeping, the full config) must change together, so both live in
one safetensors file, the JSON as its header metadata, written with ``atomic_write``: after a
crash the folder holds the previous complete checkpoint or the new one, never a mix. No pickle:
a checkpoint is plain tensors and JSON, safe to load from anywhere.

safetensors itself has no checksum, and a few flipped bytes in a tensor still load, so a damaged
file would resume silently with a wrong model. The header therefore also carries SHA-256 digests
(``ecolora_sha256``: one of the JSON state, one per tensor over its dtype, shape and bytes), and
reading verifies every one before anything is used.

Resuming rebuilds the run from its saved config (same data, partition and base model, all
seeded), loads this state and continues the round loop, so ``metrics.jsonl`` ends up identical
to an uninterrupted run's except for wall-clock timing fields. Client batches and sampling are
derived from (seed, client, round) alone, so no numpy RNG state has to be saved; torch's global
RNG (LoRA dropout) is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecolora.config import RunConfig
from ecolora.errors import ConfigError, DataError
from ecolora.methods import ServerState
from ecolora.methods.memory import SegmentMemory
from ecolora.report.results import atomic_write

FORMAT = "ecolora-checkpoint"
VERSION = 1
FILENAME = "checkpoint.safetensors"
SUMS_KEY = "ecolora_sha256"  # header metadata key of the digests (see the module docstring)

Params = list[np.ndarray]


@dataclass
class SimState:
    """Everything the simulation loop carries from one round to the next."""

    round: int  # rounds completed
    params: Params
    initial: dict[str, float]
    rows: list[dict] = field(default_factory=list)
    residuals: dict[int, Params | None] = field(default_factory=dict)
    local: dict[int, Params | None] = field(default_factory=dict)
    synced: dict[int, int] = field(default_factory=dict)
    last_broadcast: int = 0
    server: ServerState = field(default_factory=ServerState)


def config_diff(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> str | None:
    """The first differing knob as ``section.key: A there, B here``; None when equal."""
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<unset>"), current.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict) and key != "fields":
            found = config_diff(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: {a!r} there, {b!r} here"
    return None


# --------------------------------------------------------------------------- save


def save_checkpoint(path: Path, state: SimState, cfg: RunConfig, layout_names: list[str]) -> None:
    """Write ``state`` atomically to ``path`` (safetensors; JSON state in the header)."""
    from safetensors.numpy import save

    tensors: dict[str, np.ndarray] = {}
    _put(tensors, "global", state.params)
    for kind, per_client in (("residual", state.residuals), ("local", state.local)):
        for k, arrays in per_client.items():
            if arrays is not None:
                _put(tensors, f"{kind}.{k}", arrays)
    server = {}
    for f in fields(state.server):
        value = getattr(state.server, f.name)
        if isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
            _put(tensors, f"server.{f.name}", value)
            server[f.name] = {"arrays": len(value)}
        elif isinstance(value, SegmentMemory):
            for k, arrays in value.updates.items():
                _put(tensors, f"server.{f.name}.{k}", arrays)
            server[f.name] = {"memory": {str(k): {"weight": value.weight[k],
                                                  "known": sorted(value.known[k])}
                                         for k in value.updates}}
        else:
            server[f.name] = {"value": value}
    tensors["rng.torch"] = torch.get_rng_state().numpy()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    for i, s in enumerate(cuda):
        tensors[f"rng.cuda.{i}"] = s.numpy()
    meta = {
        "format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "round": state.round,
        "layout": layout_names, "initial": state.initial, "rows": state.rows,
        "residual_clients": sorted(k for k, v in state.residuals.items() if v is not None),
        "local_clients": sorted(k for k, v in state.local.items() if v is not None),
        "none_residuals": sorted(k for k, v in state.residuals.items() if v is None),
        "none_local": sorted(k for k, v in state.local.items() if v is None),
        "synced": {str(k): v for k, v in state.synced.items()},
        "last_broadcast": state.last_broadcast, "server": server, "cuda_rng": len(cuda),
    }
    header = json.dumps(meta, sort_keys=True)
    sums = {"header": _sha256(header.encode("utf-8")),
            "tensors": {name: _tensor_sha256(a) for name, a in tensors.items()}}
    blob = save(tensors, metadata={"ecolora": header, SUMS_KEY: json.dumps(sums, sort_keys=True)})
    atomic_write(path, lambda fh: fh.write(blob), mode="wb")


def _put(tensors: dict[str, np.ndarray], prefix: str, arrays: Params) -> None:
    for i, a in enumerate(arrays):
        tensors[f"{prefix}.{i}"] = np.ascontiguousarray(a)


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_sha256(array: np.ndarray) -> str:
    """Digest of a tensor's dtype, shape and bytes, so a reshaped or retyped tensor fails too."""
    h = hashlib.sha256(f"{array.dtype.str}{tuple(array.shape)}".encode())
    h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
    return h.hexdigest()


# --------------------------------------------------------------------------- load


def load_checkpoint(path: Path, cfg: RunConfig, layout_names: list[str]) -> SimState:
    """Read a checkpoint written by the same config and model; anything else is one-line error.

    Restores torch's RNG state as a side effect, so call it after the model is built.
    """
    meta, tensors = _read(path)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(f"{path}: not an ecolora checkpoint (format {meta.get('format')!r}, "
                        f"version {meta.get('version')!r})")
    diff = config_diff(meta.get("config", {}), cfg.to_dict())
    if diff:
        raise ConfigError(f"checkpoint {path} was written by a different config ({diff})")
    if meta.get("layout") != layout_names:
        raise ConfigError(f"checkpoint {path} holds adapters of a different model layout")
    try:
        state = _state(meta, tensors, len(layout_names))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: corrupt checkpoint (missing or bad entry {exc})") from None
    torch.set_rng_state(torch.from_numpy(tensors["rng.torch"].copy()))
    if torch.cuda.is_available() and meta.get("cuda_rng", 0) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.from_numpy(tensors[f"rng.cuda.{i}"].copy())
                                      for i in range(meta["cuda_rng"])])
    return state


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from safetensors import safe_open
    from safetensors.numpy import load

    if not path.is_file():
        raise DataError(f"no checkpoint at {path}")
    try:
        data = path.read_bytes()
        tensors = load(data)
        with safe_open(str(path), framework="np") as fh:
            header = fh.metadata() or {}
        text = header["ecolora"]
        meta = json.loads(text)
    except Exception as exc:  # safetensors, JSON and key errors: all mean a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: corrupt checkpoint ({reason[:200]})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: corrupt checkpoint (header is not a JSON object)")
    _verify(path, text, header.get(SUMS_KEY), tensors)
    return meta, tensors


def _verify(path: Path, text: str, sums_text: str | None, tensors: dict[str, np.ndarray]) -> None:
    """Every digest must match: the JSON state and each tensor, and no tensor may be extra."""
    def fail(why: str) -> DataError:
        return DataError(f"{path}: corrupt checkpoint ({why}); it cannot be resumed, start the "
                         "run again in a new folder")

    if sums_text is None:
        raise fail("no checksums: damaged, or written by an ecolora that did not add them")
    try:
        sums = json.loads(sums_text)
        expected = dict(sums["tensors"])
        header_sum = sums["header"]
    except (ValueError, KeyError, TypeError):
        raise fail("unreadable checksums") from None
    if header_sum != _sha256(text.encode("utf-8")):
        raise fail("checksum mismatch in the JSON state")
    if set(expected) != set(tensors):
        odd = sorted(set(expected) ^ set(tensors))[0]
        raise fail(f"tensor {odd!r} is missing or unexpected")
    for name in sorted(tensors):
        if expected[name] != _tensor_sha256(tensors[name]):
            raise fail(f"checksum mismatch in tensor {name!r}")


def _arrays(tensors: dict[str, np.ndarray], prefix: str, n: int) -> Params:
    return [tensors[f"{prefix}.{i}"].copy() for i in range(n)]


def _state(meta: dict[str, Any], tensors: dict[str, np.ndarray], n: int) -> SimState:
    residuals: dict[int, Params | None] = {int(k): None for k in meta["none_residuals"]}
    residuals.update({int(k): _arrays(tensors, f"residual.{k}", n)
                      for k in meta["residual_clients"]})
    local: dict[int, Params | None] = {int(k): None for k in meta["none_local"]}
    for k in meta["local_clients"]:
        prefix = f"local.{k}."
        count = sum(1 for name in tensors if name.startswith(prefix))
        local[int(k)] = _arrays(tensors, f"local.{k}", count)
    server = ServerState()
    for name, entry in meta["server"].items():
        if not hasattr(server, name):
            raise ValueError(f"server.{name}")
        if "memory" in entry:
            value = SegmentMemory()
            for k, info in entry["memory"].items():
                value.updates[int(k)] = _arrays(tensors, f"server.{name}.{k}", n)
                value.weight[int(k)] = float(info["weight"])
                value.known[int(k)] = {int(j) for j in info["known"]}
        else:
            value = _arrays(tensors, f"server.{name}", entry["arrays"]) if "arrays" in entry \
                else entry["value"]
        setattr(server, name, value)
    rows = meta["rows"]
    if not isinstance(rows, list) or int(meta["round"]) != len(rows):
        raise ValueError("rows")
    return SimState(
        round=int(meta["round"]), params=_arrays(tensors, "global", n), initial=meta["initial"],
        rows=rows, residuals=residuals, local=local,
        synced={int(k): int(v) for k, v in meta["synced"].items()},
        last_broadcast=int(meta["last_broadcast"]), server=server,
    )


def checkpointer(path: Path, cfg: RunConfig, layout_names: list[str]):
    """The ``on_checkpoint`` hook of ``simulate``: save every N rounds and after the last."""
    every, rounds = cfg.fed.checkpoint_every, cfg.fed.rounds

    def on_checkpoint(state: SimState) -> None:
        if every and (state.round % every == 0 or state.round == rounds):
            save_checkpoint(path, state, cfg, layout_names)

    return on_checkpoint
