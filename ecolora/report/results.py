"""Run folder output, written atomically: a reader never sees a half-written file.

Each file is written to a temporary sibling and moved into place with ``os.replace``, so after a
crash the folder holds the last complete ``metrics.jsonl`` and no partial summary or plot.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("ecolora", "torch", "transformers", "peft", "numpy", "flwr")


def umask() -> int:
    """The process umask (read without changing it where /proc allows: thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600; outputs follow the umask
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, sort_keys=True))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write(path, lambda fh: fh.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


def summarize(rows: list[dict], initial: dict, config: dict, wall_s: float,
              extra: dict | None = None) -> dict:
    evals = [r for r in rows if "eval_accuracy" in r]
    last = evals[-1] if evals else {}
    compute = sum(r["compute_s"] for r in rows)
    comm = sum(r["comm_s"] for r in rows)
    return {
        "method": config["method"],
        "rounds": len(rows),
        "total_upload_bytes": sum(r["upload_bytes"] for r in rows),
        "total_upload_nonzeros": sum(r["upload_nonzeros"] for r in rows),
        "total_download_bytes": sum(r["download_bytes"] for r in rows),
        "initial_eval_loss": initial["eval_loss"],
        "initial_eval_accuracy": initial["eval_accuracy"],
        "final_eval_loss": last.get("eval_loss"),
        "final_eval_accuracy": last.get("eval_accuracy"),
        "best_eval_accuracy": max((r["eval_accuracy"] for r in evals), default=None),
        "compute_time_s": compute,
        "comm_time_s": comm,
        "total_time_s": compute + comm,
        "wall_time_s": wall_s,
        "rejected_uploads": sum(len(r.get("rejected", {})) for r in rows),
        "config": config,
        "versions": versions(),
        **(extra or {}),
    }
