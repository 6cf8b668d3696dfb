"""`ecolora compare`: several methods on the same data, partition and seeds, one report folder.

    ecolora compare --methods fedit,ffa-lora,topk-ef,ecolora --seeds 3 --network mobile \\
        [--rounds 30 --clients 10 --set key=value ...] --out runs/compare

Writes compare.md, compare.csv, runs.csv, acc_vs_upload.png, loss_vs_round.png,
time_breakdown.png and per-run metrics (runs/LABEL-seedS/) into OUT. Exactly the methods asked
for are run. ``METHOD+down`` runs METHOD with sparse global deltas
(compress.compress_download); ``--down`` adds ``ecolora+down`` beside ``ecolora`` so the report
shows what that knob saves.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from ecolora.cli.options import (
    ClientsOpt,
    ConfigOpt,
    DatasetOpt,
    EvalDatasetOpt,
    ModelOpt,
    NetworkOpt,
    QuietOpt,
    RoundsOpt,
    SetOpt,
    WorkersOpt,
)
from ecolora.config import METHODS, RunConfig
from ecolora.errors import ConfigError


def resolve(config: Path | None, sets: list[str], network: str | None,
            **flags: object) -> tuple[RunConfig, str]:
    """The base config (file, flags, --network preset, then --set) and the link's name."""
    from ecolora.cli.run import resolve_config
    from ecolora.runtime.network import preset_sets

    cfg = resolve_config(config, None, preset_sets(network) + list(sets), **flags)
    return cfg, network or "custom link"


def parse_methods(text: str) -> list[str]:
    """Comma-separated labels, each a method name with an optional '+down'."""
    from ecolora.runtime.batch import parse_label

    labels = [m.strip() for m in text.split(",") if m.strip()]
    if not labels:
        raise ConfigError("--methods needs at least one method")
    for label in labels:
        name, _ = parse_label(label)
        if name not in METHODS:
            raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--methods lists a method twice: {text}")
    return labels


def requested_labels(text: str, down: bool = False) -> list[str]:
    """The runs' labels: exactly ``--methods``, plus ``ecolora+down`` after ``ecolora`` with
    ``--down`` (never added unasked: a report shows what was requested)."""
    labels = parse_methods(text)
    if down and "ecolora" in labels and "ecolora+down" not in labels:
        labels.insert(labels.index("ecolora") + 1, "ecolora+down")
    return labels


def seed_list(cfg: RunConfig, seeds: int) -> list[int]:
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    return [cfg.fed.seed + i for i in range(seeds)]


class Progress:
    """One progress bar over every round of ``jobs``, fed by ``run_jobs``'s callbacks; shared by
    compare, sweep and matrix so they all report progress the same way."""

    def __init__(self, jobs: list, quiet: bool, workers: int = 1,
                 name: Callable[[Any], str] | None = None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=sum(j.cfg.fed.rounds for j in jobs), unit="round", disable=quiet)
        self.workers = workers
        self.name = name or (lambda job: f"{job.label}-seed{job.cfg.fed.seed}")

    def on_start(self, job) -> None:
        self.bar.set_description(self.name(job) if self.workers == 1
                                 else f"{self.workers} workers")

    def on_round(self, job, row: dict) -> None:
        post = {"loss": f"{row['train_loss']:.3f}"}
        if "eval_accuracy" in row:
            post["acc"] = f"{100 * row['eval_accuracy']:.1f}%"
        self.bar.set_postfix(post)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def save_run(where: Path, rec) -> None:
    """A run's metrics.jsonl, then its summary.json (written last: its presence marks the run
    complete)."""
    from ecolora.report.results import summarize, write_json, write_jsonl

    write_jsonl(where / "metrics.jsonl", rec.rows)
    write_json(where / "summary.json", summarize(rec.rows, rec.initial, rec.job.cfg.to_dict(),
                                                 rec.wall_s, rec.extra))


def check_workers(workers: int) -> None:
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")


def run_all(jobs: list, out: Path, quiet: bool, folder=None, workers: int = 1) -> list:
    """Run the jobs with one progress bar; each run's metrics go to OUT/runs/..."""
    from ecolora.runtime.batch import run_jobs_parallel

    check_workers(workers)

    def name(job) -> str:
        return folder(job) if folder else f"{job.label}-seed{job.cfg.fed.seed}"

    progress = Progress(jobs, quiet, workers, name)
    records = []
    for rec in run_jobs_parallel(jobs, workers, progress.on_round, progress.on_start):
        save_run(out / "runs" / name(rec.job), rec)
        records.append(rec)
    progress.close()
    return records


def meta_for(cfg: RunConfig, seeds: list[int], network_name: str, title: str) -> dict:
    return {"title": title, "command": shlex.join(["ecolora", *sys.argv[1:]]),
            "model": cfg.model.name, "dataset": cfg.data.dataset, "clients": cfg.fed.clients,
            "rounds": cfg.fed.rounds, "seeds": seeds, "network": asdict(cfg.network),
            "network_name": network_name}


def compare(
    methods: Annotated[str, typer.Option(help="comma-separated; METHOD+down adds sparse global "
                                         "deltas. Known: " + ", ".join(METHODS))]
    = "fedit,ffa-lora,topk-ef,ecolora",
    seeds: Annotated[int, typer.Option(help="number of seeds: fed.seed, fed.seed+1, ...")] = 3,
    down: Annotated[bool, typer.Option("--down/--no-down", help="also run ecolora+down beside "
                                       "ecolora (what compress_download saves)")] = False,
    network: NetworkOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    eval_dataset: EvalDatasetOpt = None,
    clients: ClientsOpt = None,
    rounds: RoundsOpt = None,
    seed: Annotated[int | None, typer.Option(help="first seed")] = None,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("runs/compare"),
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    workers: WorkersOpt = 1,
) -> None:
    """Run several methods on the same data, partition and seeds; write a comparison report."""
    from ecolora.report.compare import write_compare
    from ecolora.runtime.batch import job_for

    cfg, net_name = resolve(config, set_ or [], network, model=model, dataset=dataset,
                            eval_dataset=eval_dataset, clients=clients, rounds=rounds, seed=seed)
    labels = requested_labels(methods, down)
    seed_ids = seed_list(cfg, seeds)
    jobs = [job_for(label, cfg, s) for s in seed_ids for label in labels]  # validates all
    records = run_all(jobs, out, quiet, workers=workers)
    write_compare(out, records, meta_for(cfg, seed_ids, net_name, "Method comparison"))
    from ecolora.report.compare import aggregate, run_summary

    for r in aggregate([run_summary(rec) for rec in records]):
        ratio = r["upload_ratio"]
        typer.echo(f"{r['label']:>14s}: accuracy {100 * r['final_accuracy_mean']:.1f} ± "
                   f"{100 * r['final_accuracy_std']:.1f}%, upload {r['upload_bytes'] / 1e6:.3f} MB"
                   + ("" if ratio != ratio else f" ({100 * ratio:.1f}% of FedIT)")
                   + f", compute {r['compute_measured_s']:.1f} s measured, "
                   f"{r['compute_s']:.1f} s shared; comm {r['comm_s']:.1f} s modeled; total "
                   f"{r['total_s']:.1f} s")
    typer.echo(f"report: {out / 'compare.md'}")
