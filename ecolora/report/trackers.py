"""`--report-to tensorboard`: every metrics row as TensorBoard scalars, step = round.

Uses ``torch.utils.tensorboard`` (already part of torch), which needs the ``tensorboard`` package
to write event files; it is an optional extra (``pip install 'ecolora[tensorboard]'``), checked
before the run starts so a missing package is a one-line error, not a failure after training.
"""

from __future__ import annotations

from pathlib import Path

from ecolora.errors import ConfigError

REPORT_TO = ("none", "tensorboard")
MISSING = ("--report-to tensorboard needs the tensorboard package: pip install "
           "'ecolora[tensorboard]' (or pip install tensorboard)")
# metrics.jsonl fields that are not curves (strings, per-client dicts, the x axis itself)
SKIP = {"round", "method", "rejected"}


def check_report_to(value: str) -> str:
    """The validated ``--report-to`` value; tensorboard must be importable."""
    if value not in REPORT_TO:
        raise ConfigError(f"--report-to {value!r}: choose from {', '.join(REPORT_TO)}")
    if value == "tensorboard":
        _writer_class()
    return value


def _writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises this when the tensorboard package is absent
        raise ConfigError(MISSING) from None
    return SummaryWriter


class TensorBoardLogger:
    """Writes each round's numeric metrics under ``logdir`` (``OUT/tensorboard``).

    Bytes are logged per round and cumulatively in MB, next to the losses and accuracies, so the
    accuracy-against-bytes trade-off can be read off TensorBoard's "relative" axis too.
    """

    def __init__(self, logdir: Path, start_bytes: tuple[int, int] = (0, 0)) -> None:
        self.writer = _writer_class()(log_dir=str(logdir))
        self.up, self.down = start_bytes

    def log_row(self, row: dict) -> None:
        step = int(row["round"])
        self.up += int(row.get("upload_bytes", 0))
        self.down += int(row.get("download_bytes", 0))
        for key, value in row.items():
            if key in SKIP or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            group = "eval" if key.startswith("eval_") else "train" if "loss" in key else "comm"
            if key.endswith("_s"):
                group = "time"
            self.writer.add_scalar(f"{group}/{key}", float(value), step)
        self.writer.add_scalar("comm/cumulative_upload_mb", self.up / 1e6, step)
        self.writer.add_scalar("comm/cumulative_download_mb", self.down / 1e6, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
