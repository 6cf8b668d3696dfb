"""`ecolora sweep`: one ablation axis, every value x method x seed, one table and one plot.

    ecolora sweep --axis segments --values 1,2,4 --methods fedit,ecolora --seeds 3 --out DIR

Named axes follow the paper's ablations (spec §2 [3P-SRC]: sparsity, segments, client count,
local updates, rank; participation and non-IID); any other knob works as ``section.key``.
Outputs go to DIR/sweep_AXIS.{md,csv,png} so several axes can share one folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ecolora.cli.compare import (
    meta_for,
    parse_methods,
    resolve,
    run_all,
    seed_list,
)
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
from ecolora.config import SECTIONS, RunConfig
from ecolora.errors import ConfigError


def _rho(v: str, cfg: RunConfig) -> dict:
    b = float(v)
    a = min(1.0, b * cfg.compress.rho_a / cfg.compress.rho_b)
    return {"compress": {"rho_b": b, "rho_a": a}}


def _rank(v: str, cfg: RunConfig) -> dict:
    r = int(v)
    return {"model": {"lora_r": r, "lora_alpha": r * cfg.model.lora_alpha / cfg.model.lora_r}}


def _knob(section: str, key: str) -> Callable[[str, RunConfig], dict]:
    return lambda v, cfg: {section: {key: v}}


# axis -> (overrides for a value, what it means)
AXES: dict[str, tuple[Callable[[str, RunConfig], dict], str]] = {
    "rho": (_rho, "`rho` sets the B density rho_b; rho_a keeps its ratio to rho_b (spec §5.2). "
            "FedIT and FFA-LoRA are dense whatever the value: their rows are references."),
    "segments": (_knob("compress", "num_segments"), "`segments` is compress.num_segments S "
                 "(spec §4); FedIT always sends one dense segment."),
    "clients": (_knob("fed", "clients"), "`clients` is fed.clients K (data re-partitioned)."),
    "local_steps": (_knob("fed", "local_steps"), "`local_steps` is fed.local_steps E."),
    "lora_r": (_rank, "`lora_r` is the LoRA rank r; lora_alpha scales with it so alpha/r "
               "stays as configured."),
    "participation": (_knob("fed", "participation"), "`participation` is fed.participation q."),
    "alpha": (_knob("data", "dirichlet_alpha"), "`alpha` is data.dirichlet_alpha (smaller = "
              "more non-IID; partition=dirichlet)."),
}


def axis_overrides(axis: str) -> tuple[Callable[[str, RunConfig], dict], str]:
    if axis in AXES:
        return AXES[axis]
    section, dot, key = axis.partition(".")
    if dot and section in SECTIONS:
        return _knob(section, key), f"`{axis}` is the knob {axis}."
    raise ConfigError(f"unknown sweep axis {axis!r}; use one of {', '.join(AXES)} or "
                      "section.key (e.g. compress.rho_down)")


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def sweep(
    axis: Annotated[str, typer.Option(help="rho | segments | clients | local_steps | lora_r | "
                                      "participation | alpha | section.key")],
    values: Annotated[str, typer.Option(help="comma-separated values of the axis")],
    methods: Annotated[str, typer.Option(help="comma-separated methods (METHOD+down allowed)")]
    = "fedit,ecolora",
    seeds: Annotated[int, typer.Option(help="number of seeds: fed.seed, fed.seed+1, ...")] = 1,
    network: NetworkOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    eval_dataset: EvalDatasetOpt = None,
    clients: ClientsOpt = None,
    rounds: RoundsOpt = None,
    seed: Annotated[int | None, typer.Option(help="first seed")] = None,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("runs/sweep"),
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    workers: WorkersOpt = 1,
) -> None:
    """Sweep one ablation axis over values x methods x seeds; write its table and plot."""
    from ecolora.report.sweep import write_sweep
    from ecolora.runtime.batch import job_for

    over, axis_help = axis_overrides(axis)
    cfg, net_name = resolve(config, set_ or [], network, model=model, dataset=dataset,
                            eval_dataset=eval_dataset, clients=clients, rounds=rounds, seed=seed)
    labels = parse_methods(methods)
    points = [v.strip() for v in values.split(",") if v.strip()]
    if not points:
        raise ConfigError("--values needs at least one value")
    try:
        extra = {v: over(v, cfg) for v in points}
    except ValueError as exc:
        raise ConfigError(f"bad --values for axis {axis}: {exc}") from None
    seed_ids = seed_list(cfg, seeds)
    jobs = [job_for(label, cfg, s, _value(v), extra[v])
            for v in points for s in seed_ids for label in labels]  # validates every config
    slug = axis.replace(".", "_")
    records = run_all(jobs, out, quiet,
                      folder=lambda j: f"{slug}={j.value}/{j.label}-seed{j.cfg.fed.seed}",
                      workers=workers)
    meta = meta_for(cfg, seed_ids, net_name, f"Sweep over {axis}") | {"axis_help": axis_help}
    paths = write_sweep(out, axis, records, meta)
    typer.echo(f"report: {paths[0]}")
