"""The run folder's life cycle around ``simulate``: start or resume, side files, final adapter.

Kept out of ``cli/run.py`` so the command stays a short script: this module owns what a run
folder holds besides metrics (``partition.json``/``partition.png``, ``samples.jsonl``, the
checkpoint and ``adapter/``) and the rules of ``--resume``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import typer

from ecolora.cli.out_guard import RunLock, claim, make_folder
from ecolora.config import RunConfig
from ecolora.errors import ConfigError
from ecolora.runtime.checkpoint import (
    FILENAME,
    SimState,
    checkpointer,
    config_diff,
    load_checkpoint,
)
from ecolora.runtime.outputs import read_jsonl
from ecolora.runtime.setup import RunSetup


def saved_config(out: Path) -> RunConfig:
    """The config a run folder was started with (``OUT/config.json``)."""
    path = out / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume {out}: not a run folder (no config.json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--resume {out}: unreadable config.json ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--resume {out}: config.json must hold a JSON object, got "
                          f"{type(raw).__name__}")
    return RunConfig.from_dict(raw)


def check_same_config(saved: RunConfig, requested: RunConfig, out: Path) -> None:
    """A resumed run must be the run that was started: any changed knob is an error."""
    diff = config_diff(saved.to_dict(), requested.to_dict())
    if diff:
        raise ConfigError(f"--resume {out} continues the saved config; this command changes "
                          f"it ({diff}); drop the option or start a new run folder")


@dataclass
class RunFolder:
    """Writers for one run folder; ``state`` is the checkpoint to continue from, if any."""

    out: Path
    setup: RunSetup
    state: SimState | None = None
    samples: list[dict] = field(default_factory=list)
    lock: RunLock | None = None  # held from open_run_folder until close (cli/out_guard.py)

    def close(self) -> None:
        """Release the folder's lock (process exit releases it too)."""
        if self.lock is not None:
            self.lock.release()

    def on_checkpoint(self) -> Callable[[SimState], None]:
        names = [t.name for t in self.setup.layout.tensors]
        return checkpointer(self.out / FILENAME, self.setup.cfg, names)

    def write_samples(self, rows: list[dict]) -> None:
        from ecolora.report.results import write_jsonl

        self.samples.extend(rows)
        write_jsonl(self.out / "samples.jsonl", self.samples)


def open_run_folder(out: Path, setup: RunSetup, resume: bool, quiet: bool,
                    overwrite: bool = False) -> RunFolder:
    """Create or reopen ``out`` and lock it; print and save the partition; load the checkpoint on
    resume. On any error the lock is released again."""
    make_folder(out)
    lock = RunLock(out)
    try:
        claim(out, resume, overwrite)
        folder = RunFolder(out, setup, lock=lock)
        _start(folder, resume, quiet)
    except BaseException:
        lock.release()
        raise
    return folder


def _start(folder: RunFolder, resume: bool, quiet: bool) -> None:
    from ecolora.data.partition import summary_text
    from ecolora.report.partition import plot_partition
    from ecolora.report.results import write_json

    out, setup = folder.out, folder.setup
    cfg = setup.cfg
    if resume and (out / FILENAME).is_file():
        names = [t.name for t in setup.layout.tensors]
        folder.state = load_checkpoint(out / FILENAME, cfg, names)
        done = folder.state.round
        earlier = read_jsonl(out / "samples.jsonl")
        folder.samples = [r for r in earlier if r.get("round", 0) <= done]
        if not quiet:
            typer.echo(f"resuming {out} after round {done} of {cfg.fed.rounds}")
    elif resume and not quiet:
        typer.echo(f"no checkpoint in {out} yet: starting it again from round 0")
    write_json(out / "config.json", cfg.to_dict())
    write_json(out / "partition.json", setup.partition)
    plot_partition(setup.partition, out,
                   f"{cfg.data.partition} partition of {Path(cfg.data.dataset).name}")
    setup.on_samples = folder.write_samples
    if not quiet:
        typer.echo(summary_text(setup.partition, cfg.data.partition))
        n = sum(len(c) for c in setup.clients) + len(setup.eval_data)
        typer.echo(f"{setup.truncated} of {n} examples truncated at model.max_seq_len="
                   f"{cfg.model.max_seq_len}, {setup.dropped} dropped (prompt under "
                   f"model.min_prompt_len={cfg.model.min_prompt_len} tokens); objective "
                   f"{setup.objective.name}")

