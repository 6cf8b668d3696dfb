"""Optional outputs of `ecolora run`: TensorBoard, adapters every N rounds and the best one, and
client upload payloads for `ecolora inspect`.

They only observe the run, through hooks ``cli/run.py`` already has: the per-round metrics row
(``on_round``) and the state after each round (``on_state``, fed by the checkpoint hook, whose
``params`` are that round's global adapter). Payloads are the one thing no hook carries, so
``tap_uploads`` wraps the method's ``client_update`` on this run's instance and copies the bytes
it returns; nothing the run computes changes. All of it is validated before the run folder
exists, and every file is written atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer

from ecolora.errors import ConfigError
from ecolora.report.trackers import check_report_to

MINIMIZED = ("loss", "perplexity")  # eval columns where lower is better


@dataclass(frozen=True)
class OutputOptions:
    report_to: str = "none"
    save_every: int = 0  # export the global adapter every N rounds (0: only at the end)
    save_best: bool = False
    best_metric: str = "eval_accuracy"
    save_payloads: frozenset[int] = frozenset()  # 1-based rounds whose uploads are written


def parse_rounds(text: str | None, rounds: int) -> frozenset[int]:
    """``--save-payloads``: 'all', 'last' or comma-separated round numbers in 1..rounds."""
    if not text:
        return frozenset()
    if text.strip() == "all":
        return frozenset(range(1, rounds + 1))
    out = set()
    for part in text.split(","):
        part = part.strip()
        if part == "last":
            out.add(rounds)
            continue
        try:
            value = int(part)
        except ValueError:
            raise ConfigError(f"--save-payloads {text!r}: expected 'all', 'last' or round "
                              "numbers like 1,10") from None
        if not 1 <= value <= rounds:
            raise ConfigError(f"--save-payloads: round {value} is outside 1..{rounds}")
        out.add(value)
    return frozenset(out)


def output_options(report_to: str, save_every: int, save_best: bool, best_metric: str,
                   save_payloads: str | None, rounds: int) -> OutputOptions:
    """Validate the output flags at the edge (a missing tensorboard package included)."""
    if save_every < 0:
        raise ConfigError(f"--save-every must be >= 0, got {save_every}")
    if not best_metric.startswith("eval_") or best_metric == "eval_":
        raise ConfigError(f"--best-metric {best_metric!r}: expected an eval column such as "
                          "eval_accuracy, eval_loss or eval_rouge_l")
    return OutputOptions(check_report_to(report_to), save_every, save_best, best_metric,
                         parse_rounds(save_payloads, rounds))


def tap_uploads(method, rounds: frozenset[int], out: Path) -> None:
    """Write ``method``'s upload payloads of the given rounds to ``out/payloads``."""
    from ecolora.report.results import atomic_write

    inner = method.client_update

    def client_update(delta, residual, client, round_, *args, **kwargs):
        upload = inner(delta, residual, client, round_, *args, **kwargs)
        if round_ + 1 in rounds:
            path = out / "payloads" / f"round-{round_ + 1:04d}" / f"client-{client:03d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda fh: fh.write(upload.payload), mode="wb")
        return upload

    method.client_update = client_update  # this run's instance only


def better(metric: str, new: float, old: float | None) -> bool:
    if old is None or math.isnan(old):
        return not math.isnan(new)
    lower = any(word in metric for word in MINIMIZED)
    return new < old if lower else new > old


class RunOutputs:
    """The observers one run asked for; ``close`` reports what was saved."""

    def __init__(self, out: Path, setup, opts: OutputOptions, rows: list[dict],
                 echo: Callable[[str], None] | None = None) -> None:
        from ecolora.report.model_card import portable_base

        self.out, self.setup, self.opts, self.echo = out, setup, opts, echo
        self.base = portable_base(setup.cfg.model.name)
        self.tracker = None  # the --report-to tracker
        start = (sum(r["upload_bytes"] for r in rows), sum(r["download_bytes"] for r in rows))
        if opts.report_to == "tensorboard":
            from ecolora.report.trackers import TensorBoardLogger

            self.tracker = TensorBoardLogger(out / "tensorboard", start)
        elif opts.report_to == "wandb":
            from ecolora.report.trackers import WandbLogger

            self.tracker = WandbLogger(out, setup.cfg.to_dict(), start)
        self.best = _read_best(out / "adapter-best" / "best.json") if opts.save_best else None
        if self.best is not None and self.best.get("metric") != opts.best_metric:
            self.best = None  # resumed with another --best-metric: start the comparison over
        self.seen_metric = False
        if opts.save_payloads:
            tap_uploads(setup.method, opts.save_payloads, out)

    def on_round(self, row: dict) -> None:
        if self.tracker is not None:
            self.tracker.log_row(row)

    def on_state(self, state) -> None:
        """After round ``state.round``: adapters due every N rounds, and a new best."""
        if not (self.opts.save_every or self.opts.save_best):
            return
        t, row = state.round, state.rows[-1]
        if self.opts.save_every and t % self.opts.save_every == 0:
            self._export(state, self.out / "adapters", f"round-{t:04d}")
        value = row.get(self.opts.best_metric)
        if self.opts.save_best and isinstance(value, int | float):
            self.seen_metric = True
            old = None if self.best is None else self.best["value"]
            if better(self.opts.best_metric, float(value), old):
                self.best = {"round": t, "metric": self.opts.best_metric, "value": float(value)}
                path = self._export(state, self.out, "adapter-best")
                from ecolora.report.results import write_json

                write_json(path / "best.json", self.best)

    def _export(self, state, where: Path, name: str) -> Path:
        from ecolora.report.export import export_adapter
        from ecolora.report.model_card import model_card
        from ecolora.report.results import summarize

        summary = summarize(state.rows, state.initial, self.setup.cfg.to_dict(), 0.0)
        where.mkdir(parents=True, exist_ok=True)
        return export_adapter(self.setup.model, self.setup.tokenizer, state.params, where, name,
                              base_model=self.base, card=model_card(summary, self.base))

    def after_round(self, checkpoint: Callable | None) -> Callable:
        """The runtime's per-round state hook: the checkpointer first, then these outputs."""
        def hook(state) -> None:
            if checkpoint is not None:
                checkpoint(state)
            self.on_state(state)

        return hook

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
        if self.echo is None:
            return
        if self.opts.save_best and self.best is not None:
            self.echo(f"best adapter: round {self.best['round']}, {self.best['metric']} "
                      f"{self.best['value']:.4f} -> {self.out / 'adapter-best'}")
        elif self.opts.save_best and not self.seen_metric:
            self.echo(f"warning: no eval row had {self.opts.best_metric}; no best adapter saved")


def _read_best(path: Path) -> dict | None:
    """The best so far of an earlier, resumed run; a missing or damaged record starts afresh."""
    try:
        best = json.loads(path.read_text(encoding="utf-8"))
        return best if isinstance(best, dict) and isinstance(best.get("value"), float) else None
    except (OSError, ValueError):
        return None


def echo_line(quiet: bool) -> Callable[[str], None] | None:
    return None if quiet else typer.echo

