"""A node's client state that outlives a Flower run, so that a resumed run is exact (issue 14).

A SuperNode keeps each hosted client's state in ``context.state``: the global it last synced
to, the round of that sync, the error-feedback residual (EcoLoRA, topk-ef) and a personalized
method's local tensors (FedSA-LoRA's B). That RecordDict belongs to one run. After the
ServerApp or the SuperLink restarts, ``flower.resume=true`` starts a *new* run from the
server's checkpoint after R rounds, and the nodes would start from empty state: residuals and
local tensors lost, so the resumed run drifts from the uninterrupted one.

With node-config ``state-dir=PATH`` the ClientApp also writes that state after every round a
client trains, to ``PATH/<run key>/client-<k>/round-<t>.safetensors`` (atomically; the run
key hashes the run's config and output folder; t counts from 0). In a resumed run the server
names R in every message, and a client with no state yet in this run restores its latest
snapshot of a round t < R: what it held when the server's checkpoint was written. Snapshots
no future checkpoint can need are deleted, so a client keeps one or two files (a few more
with ``checkpoint_every`` > 1).
Without ``state-dir`` a resumed run starts the nodes from empty state, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from ecolora.config import RunConfig
from ecolora.errors import DataError
from ecolora.runtime.flower import protocol as P

_PARTS = (P.STATE_GLOBAL, P.STATE_RESIDUAL, P.STATE_LOCAL)
_NAME = re.compile(r"round-(\d+)\.safetensors")


def run_key(cfg: RunConfig, out: str) -> str:
    """Names one run (its config and output folder) among the runs a node has served."""
    text = json.dumps({"config": cfg.to_dict(), "out": out}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def client_dir(root: str, key: str, client: int) -> Path:
    return Path(root) / key / f"client-{client}"


def save(folder: Path, state: RecordDict, client: int, round_: int, checkpoint_every: int
         ) -> None:
    """Snapshot ``client``'s records after it trained ``round_``; drop unneeded snapshots."""
    from safetensors.numpy import save_file

    if checkpoint_every <= 0:  # the server writes no checkpoint: nothing could resume
        return
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for part in _PARTS:
        rec = state.get(P.state_key(part, client))
        if isinstance(rec, ArrayRecord):
            for i, a in enumerate(rec.to_numpy_ndarrays()):
                tensors[f"{part}.{i}"] = np.ascontiguousarray(a)
    path = folder / f"round-{round_}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"round": str(round_)})
    os.replace(tmp, path)
    # rounds are 0-based here (round t follows t completed rounds); the server's checkpoints
    # count completed rounds, the last one written is C = t // every * every, and a resume
    # from R >= C needs the latest snapshot of a round < R: keep those >= C and one before
    latest = round_ // checkpoint_every * checkpoint_every
    rounds = _rounds(folder)
    keep = {r for r in rounds if r >= latest}
    keep |= {max((r for r in rounds if r < latest), default=-1)}
    for r in rounds:
        if r not in keep:
            (folder / f"round-{r}.safetensors").unlink(missing_ok=True)


def restore(folder: Path, state: RecordDict, client: int, resumed_from: int) -> None:
    """Put the client's latest snapshot from the ``resumed_from`` rounds the server's
    checkpoint holds (0-based rounds < ``resumed_from``) into ``state``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    found = [r for r in _rounds(folder) if r < resumed_from]
    if not found:
        return  # the client had not trained by round R: it starts empty, as it did then
    r = max(found)
    path = folder / f"round-{r}.safetensors"
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise DataError(f"node state {path} is unreadable ({exc}); delete "
                        f"{folder} to resume this client from empty state") from None
    for part in _PARTS:
        arrays = [tensors[f"{part}.{i}"] for i in range(_count(tensors, part))]
        if arrays:
            state[P.state_key(part, client)] = ArrayRecord(arrays)
    state[P.state_key(P.STATE_SYNC, client)] = ConfigRecord({"round": r})


def _count(tensors: dict[str, np.ndarray], part: str) -> int:
    return sum(1 for name in tensors if name.startswith(part + "."))


def _rounds(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)))
