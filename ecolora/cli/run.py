"""`ecolora run`: one federated fine-tuning job, results into a run folder."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

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
)
from ecolora.config import METHODS, RunConfig, knob_table, load_toml, merge, parse_set
from ecolora.errors import ConfigError, RunFailedError

SIGTERM_EXIT = 128 + signal.SIGTERM  # 143, what a shell reports for a SIGTERM-ed command


def resolve_config(config: Path | None, method: str | None, sets: list[str],
                   base: RunConfig | None = None, **flags: object) -> RunConfig:
    """File (or ``base``), then flags, then --set: later wins. Validated once, at the edge."""
    cfg = RunConfig.from_dict(load_toml(config)) if config else (base or RunConfig())
    overrides: dict = {}
    sections = {"model": "model", "dataset": "data", "eval_dataset": "data", "clients": "fed",
                "rounds": "fed", "seed": "fed"}
    names = {"model": "name"}
    for flag, value in flags.items():
        if value is not None:
            overrides.setdefault(sections[flag], {})[names.get(flag, flag)] = value
    for sec, values in parse_set(sets).items():
        overrides.setdefault(sec, {}).update(values)
    if method is not None:
        overrides["method"] = method
    return merge(cfg, overrides)


def knobs_help() -> str:
    lines = ["\b", "Knobs for --set section.key=value "
             "([INF §n]: a reconstructed default, see section n of docs/spec.md):"]
    lines += [f"  {key} = {default}  {text}" for key, default, text in knob_table()]
    return "\n".join(lines)


def run(
    config: ConfigOpt = None,
    method: Annotated[str | None, typer.Option(help=" | ".join(METHODS))] = None,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    eval_dataset: EvalDatasetOpt = None,
    clients: ClientsOpt = None,
    rounds: RoundsOpt = None,
    seed: Annotated[int | None, typer.Option(help="seed for everything")] = None,
    network: NetworkOpt = None,
    out: Annotated[str | None, typer.Option(help="run folder (default runs/METHOD-seedS); "
                                            "must be new or empty")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing run in "
                                            "--out (its files are deleted)",
                                            show_default=False)] = False,
    resume: Annotated[Path | None, typer.Option(help="continue the run folder OUT from its "
                                                "last checkpoint, with its saved config")]
    = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    report_to: Annotated[str, typer.Option(help="also log every round to: none | tensorboard "
                                           "(OUT/tensorboard) | wandb (OUT/wandb; WANDB_* "
                                           "variables apply)")] = "none",
    save_every: Annotated[int, typer.Option(help="also save the global adapter every N rounds "
                                            "as OUT/adapters/round-NNNN (0: final only)")] = 0,
    save_best: Annotated[bool, typer.Option("--save-best", help="keep the adapter of the best "
                                            "eval round as OUT/adapter-best",
                                            show_default=False)] = False,
    best_metric: Annotated[str, typer.Option(help="eval column --save-best ranks by (loss and "
                                             "perplexity columns: lower is better)")]
    = "eval_accuracy",
    save_payloads: Annotated[str | None, typer.Option(help="write these rounds' client uploads "
                                                      "to OUT/payloads for ecolora inspect: "
                                                      "all, last or e.g. 1,30")] = None,
) -> None:
    args = dict(locals())
    with on_sigterm_interrupt() as terminated:  # from the start: SIGTERM is never silent
        try:
            _start(**args)
        except KeyboardInterrupt:
            if terminated():
                raise typer.Exit(SIGTERM_EXIT) from None
            raise


def _start(config: Path | None, method: str | None, model: str | None, dataset: str | None,
           eval_dataset: str | None, clients: int | None, rounds: int | None, seed: int | None,
           network: str | None, out: str | None, overwrite: bool, resume: Path | None,
           set_: list[str] | None, quiet: bool, **more: object) -> None:
    """Check every input, build the run, then run it inside its locked folder."""
    from ecolora.cli.out_guard import check_out, out_path
    from ecolora.cli.run_folder import check_same_config, open_run_folder, saved_config
    from ecolora.cli.run_outputs import output_options
    from ecolora.runtime.network import preset_sets
    from ecolora.runtime.setup import build

    saved = saved_config(resume) if resume is not None else None
    sets = preset_sets(network) + (set_ or [])
    cfg = resolve_config(config, method, sets, base=saved, model=model, dataset=dataset,
                         eval_dataset=eval_dataset, clients=clients, rounds=rounds, seed=seed)
    asked = out_path(out)
    if resume is not None:
        check_same_config(saved, cfg, resume)
        if asked is not None and asked.resolve() != resume.resolve():
            raise ConfigError(f"--resume {resume} writes into that folder; drop --out {out}")
    folder_path = resume or asked or Path("runs") / f"{cfg.method}-seed{cfg.fed.seed}"
    outputs = output_options(more["report_to"], more["save_every"], more["save_best"],
                             more["best_metric"], more["save_payloads"], cfg.fed.rounds)
    check_out(folder_path, resume=resume is not None, overwrite=overwrite)
    start = time.perf_counter()
    setup = build(cfg)  # every input error is raised here, before OUT exists
    folder = open_run_folder(folder_path, setup, resume=resume is not None, quiet=quiet,
                             overwrite=overwrite)
    try:
        _run(folder, cfg, setup, start, quiet, outputs)
    finally:
        folder.close()


def _run(folder, cfg: RunConfig, setup, start: float, quiet: bool, opts=None) -> None:
    """The round loop and the final outputs, inside the locked run folder."""
    from tqdm import tqdm

    from ecolora.cli.run_outputs import OutputOptions, RunOutputs, echo_line
    from ecolora.report.results import write_jsonl
    from ecolora.runtime.outputs import finish_run
    from ecolora.runtime.sim import simulate

    out = folder.out
    rows: list[dict] = list(folder.state.rows) if folder.state else []
    write_jsonl(out / "metrics.jsonl", rows)
    bar = tqdm(total=cfg.fed.rounds, initial=len(rows), desc=cfg.method, unit="round",
               disable=quiet)
    sent = sum(r["upload_bytes"] for r in rows)
    rejections = Rejections()

    def on_round(row: dict) -> None:
        nonlocal sent
        rows.append(row)
        sent += row["upload_bytes"]
        write_jsonl(out / "metrics.jsonl", rows)
        rejections.add(row, bar.write if not quiet else None)
        post = {"loss": f"{row['train_loss']:.3f}", "up_MB": f"{sent / 1e6:.2f}"}
        if "eval_accuracy" in row:
            post["acc"] = f"{100 * row['eval_accuracy']:.1f}%"
        bar.set_postfix(post)
        bar.update(1)
        outputs.on_round(row)

    outputs = RunOutputs(out, setup, opts or OutputOptions(), rows, echo_line(quiet))
    result = simulate(setup, on_round, resume=folder.state,
                      on_checkpoint=outputs.after_round(folder.on_checkpoint()))
    bar.close()
    summary, adapter = finish_run(out, setup, rows, result["initial"], result["params"],
                                  time.perf_counter() - start)
    outputs.close()
    s = summary
    what = "preference accuracy" if cfg.fed.objective == "dpo" else "exact match"
    typer.echo(
        f"{cfg.method}: final {what} {100 * s['final_eval_accuracy']:.1f}% "
        f"(base {100 * s['initial_eval_accuracy']:.1f}%), eval loss {s['final_eval_loss']:.4f}, "
        f"upload {s['total_upload_bytes'] / 1e6:.3f} MB, "
        f"download {s['total_download_bytes'] / 1e6:.3f} MB, "
        f"modeled comm {s['comm_time_s']:.1f} s, wall {s['wall_time_s']:.1f} s -> {out} "
        f"(adapter: {adapter})"
    )
    rejections.finish(rows)


@contextmanager
def on_sigterm_interrupt() -> Iterator[Callable[[], bool]]:
    """SIGTERM takes Ctrl-C's path (KeyboardInterrupt: partial metrics and the last checkpoint
    stay, temporary files are removed); yields whether it was SIGTERM. Main thread only."""
    got: list[int] = []

    def handler(signum: int, frame: object) -> None:
        got.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding caller): leave signals alone
        yield lambda: False
        return
    try:
        yield lambda: bool(got)
    finally:
        signal.signal(signal.SIGTERM, previous)


class Rejections:
    """Loud about uploads the server rejected (e.g. non-finite updates from a too high fed.lr).

    A round that loses every upload is warned about once, when it happens; a run in which every
    upload was rejected trained nothing, so it ends with exit 3 (its files are still written,
    they record what happened) instead of a success a script would trust.
    """

    def __init__(self) -> None:
        self.warned = False

    def add(self, row: dict, write: Callable[..., None] | None) -> None:
        rejected = row.get("rejected") or {}
        if self.warned or not rejected or len(rejected) < row.get("clients", len(rejected)):
            return
        self.warned = True
        client, why = next(iter(rejected.items()))
        message = (f"warning: round {row['round']}: every upload was rejected, the global "
                   f"adapter did not change (client {client}: {str(why)[:160]})")
        if write is not None:  # above the progress bar, not through it
            write(message, file=sys.stderr)
        else:
            typer.echo(message, err=True)

    @staticmethod
    def finish(rows: list[dict]) -> None:
        rejected = sum(len(r.get("rejected") or {}) for r in rows)
        sent = sum(int(r.get("clients", 0)) for r in rows)
        if rows and sent and rejected >= sent:
            raise RunFailedError(f"all {rejected} uploads were rejected, so the adapter did not "
                                 "train (non-finite updates? lower fed.lr)")
        if rejected:
            typer.echo(f"warning: {rejected} of {sent} uploads were rejected (see 'rejected' in "
                       "metrics.jsonl)", err=True)
