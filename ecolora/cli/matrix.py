"""`ecolora matrix`: the robustness matrix of a grid file, in one command, with a run cache.

    ecolora matrix --grid benchmarks/robustness.toml --seeds 3 --workers 2 --out runs/matrix

Run it from the repository root: data paths in the grid resolve against the current folder, as
in `ecolora run`. Every row and method of the grid runs on the same seeds as FedIT (so they
share data, partition, LoRA init and batches); the tables compare each method with FedIT and
check the issue's done-criteria (report/matrix.py). Writes matrix.md, matrix.csv, runs.csv and
matrix_FAMILY.png into OUT.

The matrix costs hours of CPU and is re-run after every method change, so each run is cached in
OUT/runs/<hash>/ (metrics.jsonl, summary.json, config.json), where <hash> is a short hash of
its whole resolved config (method and seed included) and a cache version: a second invocation
re-runs only what changed, two rows resolving to the same config share a run, and a run killed
half-way is simply run again (summary.json is written last). ``--rerun`` ignores the cache.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ecolora.cli.compare import Progress, check_workers, save_run
from ecolora.cli.options import QuietOpt, WorkersOpt
from ecolora.errors import ConfigError


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def preflight(rows: list) -> None:
    """Fail in the first second, not after hours of other rows: missing model or data file."""
    from ecolora.errors import EcoloraError
    from ecolora.train.model import resolve_model_path

    for row in rows:
        try:
            resolve_model_path(row.cfg.model.name)
        except EcoloraError as exc:
            raise type(exc)(f"row {row.name!r}: {exc}") from None
        for path in (row.cfg.data.dataset, row.cfg.data.eval_dataset):
            if Path(path).suffix in (".json", ".jsonl") and not Path(path).is_file():
                raise ConfigError(f"row {row.name!r}: data file not found: {path} (paths "
                                  "resolve against the current folder; run from the repo root)")


def load_cached(where: Path, job) -> Any:
    """The stored run of ``job`` in ``where``, or None when absent, partial or for another
    config."""
    from ecolora.runtime.batch import RunRecord

    try:
        summary = json.loads((where / "summary.json").read_text(encoding="utf-8"))
        lines = (where / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None
    want = json.loads(json.dumps(job.cfg.to_dict(), default=str))
    if summary.get("config") != want or len(rows) != job.cfg.fed.rounds:
        return None
    initial = {"eval_loss": summary.get("initial_eval_loss"),
               "eval_accuracy": summary.get("initial_eval_accuracy")}
    extra = {k: summary[k] for k in ("lora_parameters", "client_sizes") if k in summary}
    return RunRecord(job, rows, initial, summary.get("wall_time_s", 0.0), extra)


def execute(jobs: list, workers: int, quiet: bool, on_record) -> None:
    """Run ``jobs``, handing each record to ``on_record`` as soon as its batch ends, so an
    interrupted matrix keeps what finished. Sequential runs keep grid order (setups are reused
    across a seed's methods); parallel ones start the longest first, ``workers`` at a time."""
    from ecolora.report.matrix_grid import cost
    from ecolora.runtime.batch import run_jobs, run_jobs_parallel

    progress = Progress(jobs, quiet, workers, lambda j: f"{j.value}/{j.label}-seed{j.cfg.fed.seed}")
    try:
        if workers == 1:
            for rec in run_jobs(jobs, progress.on_round, progress.on_start):
                on_record(rec)
            return
        ordered = sorted(jobs, key=cost, reverse=True)
        for i in range(0, len(ordered), workers):
            for rec in run_jobs_parallel(ordered[i:i + workers], workers, progress.on_round,
                                         progress.on_start):
                on_record(rec)
    finally:
        progress.close()


def run_matrix(grid: Path, seeds: int = 3, workers: int = 1, rows: str | None = None,
               families: str | None = None, out: Path = Path("runs/matrix"),
               quiet: bool = False, rerun: bool = False,
               echo: Callable[[str], None] = typer.echo) -> dict[str, Any]:
    """Everything but argument parsing; returns the counts and the table (tests read them)."""
    from ecolora.report.matrix import digest, row_table, write_tables
    from ecolora.report.matrix_grid import CACHE_VERSION, load_grid, plan, run_key, select
    from ecolora.report.matrix_plots import plot_family
    from ecolora.report.results import write_json

    check_workers(workers)
    full = load_grid(grid)
    chosen = select(full, _split(rows), _split(families))
    uses, jobs = plan(chosen, full, seeds)  # every config validated here
    needed = {r.name for r in chosen.rows} | {r.baseline_from for r in chosen.rows}
    preflight([r for r in full.rows if r.name in needed])

    records, todo = {}, []
    for key, job in jobs.items():
        rec = None if rerun else load_cached(out / "runs" / key, job)
        if rec is None:
            todo.append(job)
        else:
            records[key] = rec
    reused = len(records)
    echo(f"{len(jobs)} runs: {reused} reused from {out / 'runs'}, {len(todo)} to run")

    users: dict[str, list[str]] = {}
    for u in uses:
        users.setdefault(u.key, []).append(f"{u.row}/{u.label}/seed{u.seed}")

    def keep(rec) -> None:
        key = run_key(rec.job.cfg)
        where = out / "runs" / key
        write_json(where / "config.json", {"label": rec.job.label, "used_by": users[key],
                                           "cache_version": CACHE_VERSION,
                                           "config": rec.job.cfg.to_dict()})
        save_run(where, rec)
        records[key] = rec

    execute(todo, workers, quiet, keep)

    fresh = {run_key(j.cfg) for j in todo}
    runs = [digest(records[u.key], u.row, u.label, u.seed, u.key, u.key not in fresh)
            for u in uses]
    table, paths = [], []
    for fam in chosen.families:
        panels = []
        for row in (r for r in chosen.rows if r.family == fam):
            mine = [r for r in runs if r["row"] == row.name]
            table += row_table(row.name, fam, row.metric, mine)
            panels.append((row.name, row.metric, mine))
        paths.append(plot_family(fam, panels, out))
    meta = {"title": chosen.title, "command": shlex.join(["ecolora", *sys.argv[1:]]),
            "grid": str(grid), "seeds": sorted({u.seed for u in uses})}
    paths = write_tables(out, table, runs, meta) + paths
    return {"runs": len(jobs), "reused": reused, "ran": len(todo), "table": table,
            "paths": paths}


def matrix(
    grid: Annotated[Path, typer.Option(help="grid TOML: [defaults] and [[row]] entries "
                                       "(see benchmarks/robustness.toml)")]
    = Path("benchmarks/robustness.toml"),
    seeds: Annotated[int, typer.Option(help="seeds per row: fed.seed, fed.seed+1, ...")] = 3,
    workers: WorkersOpt = 1,
    rows: Annotated[str | None, typer.Option(help="comma-separated row names to run")] = None,
    families: Annotated[str | None, typer.Option(help="comma-separated families to run")]
    = None,
    out: Annotated[Path, typer.Option(help="report folder; runs cached in OUT/runs/<hash>/")]
    = Path("runs/matrix"),
    rerun: Annotated[bool, typer.Option("--rerun", help="ignore cached runs, run everything",
                                        show_default=False)] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run a robustness matrix (rows x methods x seeds, FedIT as the reference); write
    matrix.md/csv and a plot per family. Runs are cached by config; run from the repo root."""
    from ecolora.report.matrix import misses

    res = run_matrix(grid, seeds, workers, rows, families, out, quiet, rerun)
    bad = misses(res["table"])
    typer.echo(f"{len(bad)} row/method pairs miss a criterion" if bad
               else "every checked row/method pair meets the criteria")
    for line in bad:
        typer.echo(line)
    typer.echo(f"report: {out / 'matrix.md'}")
