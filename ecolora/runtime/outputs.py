"""What a finished run leaves in its folder, for every runtime: adapter, curves, summary.

Why here and not in the CLI: the Flower ServerApp writes the same run folder as ``ecolora run``
(``metrics.jsonl``, ``samples.jsonl``, checkpoint, ``adapter/``, ``curves.png``,
``summary.json``) and must not import the CLI, so the writers that both need live in the
runtime layer, once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecolora.runtime.checkpoint import FILENAME, SimState, checkpointer, load_checkpoint
from ecolora.runtime.setup import RunSetup


@dataclass
class RunWriter:
    """Writers of one run folder: rows as they come, samples, checkpoints, the final files."""

    out: Path
    setup: RunSetup
    rows: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)

    def start(self, resume: bool) -> SimState | None:
        """Create the folder, write config and partition; the checkpoint to resume, if any."""
        from ecolora.report.results import write_json, write_jsonl

        self.out.mkdir(parents=True, exist_ok=True)
        state = None
        if resume and (self.out / FILENAME).is_file():
            state = load_checkpoint(self.out / FILENAME, self.setup.cfg, self.layout_names())
            self.rows = list(state.rows)
            self.samples = [r for r in read_jsonl(self.out / "samples.jsonl")
                            if r.get("round", 0) <= state.round]
        write_json(self.out / "config.json", self.setup.cfg.to_dict())
        write_json(self.out / "partition.json", self.setup.partition)
        write_jsonl(self.out / "metrics.jsonl", self.rows)
        self.setup.on_samples = self.write_samples
        return state

    def layout_names(self) -> list[str]:
        return [t.name for t in self.setup.layout.tensors]

    def on_round(self, row: dict) -> None:
        from ecolora.report.results import write_jsonl

        self.rows.append(row)
        write_jsonl(self.out / "metrics.jsonl", self.rows)

    def on_checkpoint(self) -> Callable[[SimState], None]:
        return checkpointer(self.out / FILENAME, self.setup.cfg, self.layout_names())

    def write_samples(self, rows: list[dict]) -> None:
        from ecolora.report.results import write_jsonl

        self.samples.extend(rows)
        write_jsonl(self.out / "samples.jsonl", self.samples)

    def finish(self, initial: dict, params: list[np.ndarray], wall_s: float,
               extra: dict) -> dict:
        """``adapter/``, ``curves.png`` and ``summary.json``; returns the summary."""
        return finish_run(self.out, self.setup, self.rows, initial, params, wall_s, extra)[0]


def finish_run(out: Path, setup: RunSetup, rows: list[dict], initial: dict,
               params: list[np.ndarray], wall_s: float, extra: dict | None = None
               ) -> tuple[dict, Path]:
    """The summary, the curves and the final adapter of a finished run, for every runtime.

    ``OUT/adapter`` is a peft folder that names a portable base model and carries a model card
    made from the summary; returns the summary and the adapter's path.
    """
    from ecolora.report.export import export_adapter
    from ecolora.report.model_card import model_card, portable_base
    from ecolora.report.plots import plot_run
    from ecolora.report.results import summarize, write_json

    cfg = setup.cfg
    summary = summarize(rows, initial, cfg.to_dict(), wall_s, {
        "lora_parameters": setup.layout.numel, "truncated_examples": setup.truncated,
        "dropped_examples": setup.dropped, "partition_note": setup.partition.get("note", ""),
        "client_sizes": [len(c) for c in setup.clients],
        "torch_threads": setup.threads.report(), **(extra or {})})
    plot_run(rows, out, f"{cfg.method} on {cfg.data.dataset} ({cfg.model.name})")
    base = portable_base(cfg.model.name)
    adapter = export_adapter(setup.model, setup.tokenizer, params, out, base_model=base,
                             card=model_card(summary, base))
    write_json(out / "summary.json", summary)
    return summary, adapter


def read_jsonl(path: Path) -> list[dict]:
    """Rows of an earlier JSONL file; a missing or damaged one is just started again."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
