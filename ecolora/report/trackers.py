"""`--report-to tensorboard | wandb`: every metrics row as scalars of an experiment tracker.

Both trackers are optional extras, checked before the run starts so a missing package is a
one-line error, not a failure after training:

- ``tensorboard``: ``torch.utils.tensorboard`` (part of torch) writes ``OUT/tensorboard``; it
  needs the ``tensorboard`` package (``pip install 'ecolora[tensorboard]'``).
- ``wandb``: Weights & Biases (``pip install 'ecolora[wandb]'``), files under ``OUT/wandb``.
  Project, entity and mode come from W&B's own variables (``WANDB_PROJECT``, ``WANDB_ENTITY``,
  ``WANDB_MODE=offline`` on a machine without network; sync later with ``wandb sync``); the run
  is named after the run folder and carries the resolved config.

One mapping (``scalars``) decides what is logged, so both show the same curves: every numeric
row field under a group (train, eval, comm, time) plus the cumulative upload and download in MB,
so accuracy against bytes can be read off either tool.
"""

from __future__ import annotations

from pathlib import Path

from ecolora.errors import ConfigError

REPORT_TO = ("none", "tensorboard", "wandb")
MISSING = {
    "tensorboard": "--report-to tensorboard needs the tensorboard package: pip install "
                   "'ecolora[tensorboard]' (or pip install tensorboard)",
    "wandb": "--report-to wandb needs the wandb package: pip install 'ecolora[wandb]' "
             "(or pip install wandb)",
}
# metrics.jsonl fields that are not curves (strings, per-client dicts, the x axis itself)
SKIP = {"round", "method", "rejected"}


def check_report_to(value: str) -> str:
    """The validated ``--report-to`` value; its package must be importable."""
    if value not in REPORT_TO:
        raise ConfigError(f"--report-to {value!r}: choose from {', '.join(REPORT_TO)}")
    if value == "tensorboard":
        _writer_class()
    elif value == "wandb":
        _wandb()
    return value


def _writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises this when the tensorboard package is absent
        raise ConfigError(MISSING["tensorboard"]) from None
    return SummaryWriter


def _wandb():
    try:
        import wandb
    except ImportError:
        raise ConfigError(MISSING["wandb"]) from None
    return wandb


def scalars(row: dict, up: int, down: int) -> dict[str, float]:
    """Tracker name -> value for one row; ``up``/``down`` are the bytes so far, this row's too."""
    out = {}
    for key, value in row.items():
        if key in SKIP or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        group = "eval" if key.startswith("eval_") else "train" if "loss" in key else "comm"
        if key.endswith("_s"):
            group = "time"
        out[f"{group}/{key}"] = float(value)
    out["comm/cumulative_upload_mb"] = up / 1e6
    out["comm/cumulative_download_mb"] = down / 1e6
    return out


class Tracker:
    """Counts the bytes so far (a resumed run starts from its earlier rows' totals)."""

    def __init__(self, start_bytes: tuple[int, int] = (0, 0)) -> None:
        self.up, self.down = start_bytes

    def log_row(self, row: dict) -> None:
        self.up += int(row.get("upload_bytes", 0))
        self.down += int(row.get("download_bytes", 0))
        self.write(int(row["round"]), scalars(row, self.up, self.down))

    def write(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoardLogger(Tracker):
    """Scalars under ``logdir`` (``OUT/tensorboard``), step = round."""

    def __init__(self, logdir: Path, start_bytes: tuple[int, int] = (0, 0)) -> None:
        super().__init__(start_bytes)
        self.writer = _writer_class()(log_dir=str(logdir))

    def write(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger(Tracker):
    """One W&B run per run folder (files in ``OUT/wandb``), step = round."""

    def __init__(self, out: Path, config: dict, start_bytes: tuple[int, int] = (0, 0)) -> None:
        super().__init__(start_bytes)
        wandb = _wandb()
        try:
            self.run = wandb.init(dir=str(out), name=out.name, config=config,
                                  reinit="create_new")
        except Exception as exc:  # wandb raises its own errors (no login, bad mode...)
            raise ConfigError(f"--report-to wandb: cannot start a W&B run ({exc}); for no "
                              "network, set WANDB_MODE=offline") from None

    def write(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()
