"""`ecolora run`: one federated fine-tuning job, results into a run folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ecolora.config import METHODS, RunConfig, knob_table, load_toml, merge, parse_set
from ecolora.errors import ConfigError


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
    config: Annotated[Path | None, typer.Option(help="TOML file with [model], [fed], ... tables")]
    = None,
    method: Annotated[str | None, typer.Option(help=" | ".join(METHODS))] = None,
    model: Annotated[str | None, typer.Option(help="'embedded', a HF model dir or hub name")]
    = None,
    dataset: Annotated[str | None, typer.Option(help="'embedded', a JSON/JSONL file or hub name")]
    = None,
    eval_dataset: Annotated[str | None, typer.Option(help="eval file (default: held out)")]
    = None,
    clients: Annotated[int | None, typer.Option(help="number of clients K")] = None,
    rounds: Annotated[int | None, typer.Option(help="federated rounds T")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for everything")] = None,
    network: Annotated[str | None, typer.Option(help="link preset for the modeled time: lan | "
                                                "wan | mobile (applied before --set)")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/METHOD-seedS)")]
    = None,
    resume: Annotated[Path | None, typer.Option(help="continue the run folder OUT from its "
                                                "last checkpoint, with its saved config")]
    = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="section.key=value; repeatable")]
    = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar", show_default=False)]
    = False,
) -> None:
    from tqdm import tqdm

    from ecolora.cli.run_folder import check_same_config, open_run_folder, saved_config
    from ecolora.report.export import export_adapter
    from ecolora.report.plots import plot_run
    from ecolora.report.results import summarize, write_json, write_jsonl
    from ecolora.runtime.network import preset_sets
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import simulate

    saved = saved_config(resume) if resume is not None else None
    sets = preset_sets(network) + (set_ or [])
    cfg = resolve_config(config, method, sets, base=saved, model=model, dataset=dataset,
                         eval_dataset=eval_dataset, clients=clients, rounds=rounds, seed=seed)
    if resume is not None:
        check_same_config(saved, cfg, resume)
        if out is not None and out.resolve() != resume.resolve():
            raise ConfigError(f"--resume {resume} writes into that folder; drop --out {out}")
    start = time.perf_counter()
    setup = build(cfg)  # every input error is raised here, before OUT exists
    out = resume or out or Path("runs") / f"{cfg.method}-seed{cfg.fed.seed}"
    folder = open_run_folder(out, setup, resume=resume is not None, quiet=quiet)
    rows: list[dict] = list(folder.state.rows) if folder.state else []
    write_jsonl(out / "metrics.jsonl", rows)
    bar = tqdm(total=cfg.fed.rounds, initial=len(rows), desc=cfg.method, unit="round",
               disable=quiet)
    sent = sum(r["upload_bytes"] for r in rows)

    def on_round(row: dict) -> None:
        nonlocal sent
        rows.append(row)
        sent += row["upload_bytes"]
        write_jsonl(out / "metrics.jsonl", rows)
        post = {"loss": f"{row['train_loss']:.3f}", "up_MB": f"{sent / 1e6:.2f}"}
        if "eval_accuracy" in row:
            post["acc"] = f"{100 * row['eval_accuracy']:.1f}%"
        bar.set_postfix(post)
        bar.update(1)

    result = simulate(setup, on_round, resume=folder.state, on_checkpoint=folder.on_checkpoint())
    bar.close()
    adapter = export_adapter(setup.model, setup.tokenizer, result["params"], out)
    summary = summarize(rows, result["initial"], cfg.to_dict(), time.perf_counter() - start,
                        {"lora_parameters": setup.layout.numel, "truncated_examples":
                         setup.truncated, "client_sizes": [len(c) for c in setup.clients],
                         "torch_threads": setup.threads.report()})
    plot_run(rows, out, f"{cfg.method} on {cfg.data.dataset} ({cfg.model.name})")
    write_json(out / "summary.json", summary)
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
