"""`ecolora estimate`: the bytes and modeled time of a federated run at any model's scale.

    ecolora estimate --model docs/estimate/llama-2-7b-config.json --rank 16 --targets all-linear \\
        --clients 10 --rounds 30 --network mobile --step-s 1.8 --json est.json

Nothing is trained: the model is built from its config on the meta device, and every payload
is encoded by the method objects (``runtime/estimate.py`` says what is counted and why).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from ecolora.cli.options import ClientsOpt, ConfigOpt, QuietOpt, RoundsOpt
from ecolora.errors import ConfigError

HELP = ("Exact bytes per round and whole-run bytes and time of each method on any causal LM, "
        "from its config alone (no weights, nothing trained). Payloads are really encoded from "
        "a seeded Gaussian delta; the broadcast delta of a round is nonzero on the union of its "
        "senders' kept entries drawn independently (the independent-clients bound: real "
        "clients overlap more). Time: rounds x (local_steps x step_s + modeled comm), spec §9.")


def estimate(
    model: Annotated[str | None, typer.Option(help="a causal LM's config.json, a folder holding "
                                              "one, embedded, realtext or a hub name")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank r (model.lora_r)")] = None,
    targets: Annotated[str | None, typer.Option(help="LoRA target modules, comma separated, or "
                                                "all-linear (default: the architecture's own)")]
    = None,
    clients: ClientsOpt = None,
    participation: Annotated[float | None, typer.Option(help="fraction q of clients sampled "
                                                        "each round")] = None,
    rounds: RoundsOpt = None,
    local_steps: Annotated[int | None, typer.Option(help="local steps per round "
                                                    "(fed.local_steps)")] = None,
    network: Annotated[str | None, typer.Option(help="link preset: lan | wan | mobile (before "
                                                "--set; default: the network.* knobs)")] = None,
    step_s: Annotated[float | None, typer.Option(help="seconds of compute per local step "
                                                 "(required unless --measure-step)")] = None,
    measure_step: Annotated[bool, typer.Option(
        "--measure-step", help="time one forward+backward of fed.batch_size x model.max_seq_len "
        "random tokens on model.device with random weights (the faster of two after a warm-up; "
        "model.threads sets CPU threads); refused when the fp32 model exceeds half the free "
        "memory", show_default=False)] = False,
    methods: Annotated[str, typer.Option(help="comma-separated methods (METHOD+down too); "
                                         "fedit is always computed, for the shares")]
    = "fedit,ecolora",
    config: ConfigOpt = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="section.key=value; "
                                                   "repeatable, as for ecolora run")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write every number, "
                                                  "per round too, to this JSON file")] = None,
    quiet: QuietOpt = False,
) -> None:
    from ecolora.cli.compare import parse_methods
    from ecolora.cli.run import resolve_config
    from ecolora.report.results import write_json
    from ecolora.runtime import estimate as est
    from ecolora.runtime.network import preset_sets
    from ecolora.train.model import layout_of

    flags = {"fed.participation": participation, "fed.local_steps": local_steps,
             "model.lora_r": rank, "model.target_modules": targets}
    sets = preset_sets(network) + [f"{k}={v}" for k, v in flags.items() if v is not None]
    cfg = resolve_config(config, None, sets + (set_ or []), model=model, clients=clients,
                         rounds=rounds)
    labels = parse_methods(methods)
    if (step_s is None) == (not measure_step):
        raise ConfigError("give --step-s SECONDS (compute per local step) or --measure-step, "
                          "exactly one")
    if step_s is not None:
        est.check_step_s(step_s)
    hf_config = est.load_config(cfg.model.name)
    meta_model = est.build_lora(hf_config, cfg.model)
    layout = layout_of(meta_model)
    params = sum(p.numel() for p in meta_model.parameters()) - layout.numel
    if measure_step:
        step_s = est.measure_step_s(hf_config, cfg.model, cfg.fed.batch_size, params)
        typer.echo(f"measured step: {step_s:.3f} s ({cfg.fed.batch_size} x "
                   f"{cfg.model.max_seq_len} tokens, model.device={cfg.model.device})")
    results = est.estimate(layout, cfg, labels, float(step_s), _bar(quiet))
    meta = {"model": cfg.model.name, "base_params": params, "lora_params": layout.numel,
            "lora_tensors": len(layout), "lora_r": cfg.model.lora_r,
            "targets": sorted({n.split(".lora_")[0].rsplit(".", 1)[-1] for n in layout.names}),
            "clients": cfg.fed.clients, "participation": cfg.fed.participation,
            "rounds": cfg.fed.rounds, "local_steps": cfg.fed.local_steps, "step_s": step_s,
            "step_measured": measure_step, "seed": cfg.fed.seed,
            "network": {"preset": network, **asdict(cfg.network)},
            "delta_std": est.DELTA_STD, "download_union": "independent-clients bound"}
    typer.echo(render(results, meta))
    if json_out is not None:
        write_json(json_out, est.to_json(results, meta))
        typer.echo(f"wrote {json_out}")


def _bar(quiet: bool):
    """A tqdm bar over the payloads to encode, made on the first one (the total is known then)."""
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int, what: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="payload", disable=quiet, leave=False)
        bar.set_description(what)
        bar.update(1)
        if done >= total:
            bar.close()

    return progress


def render(results: list, meta: dict) -> str:
    """The table a person reads: exact bytes per round, then the whole run against FedIT."""
    ref = next(r for r in results if r.label == "fedit").totals
    net = meta["network"]
    link = (f"{net['preset'] or 'custom link'} ({net['uplink_mbps']:g}/{net['downlink_mbps']:g} "
            f"Mbit/s up/down, {net['latency_ms']:g} ms one way)")
    lines = [
        f"{meta['model']}: {meta['base_params']:,} base parameters; LoRA r={meta['lora_r']} on "
        f"{','.join(meta['targets'])}: {meta['lora_tensors']} tensors, "
        f"{meta['lora_params']:,} parameters",
        f"{meta['clients']} clients, participation {meta['participation']:g}, "
        f"{meta['rounds']} rounds x {meta['local_steps']} local steps of {meta['step_s']:.3g} s, "
        f"{link}",
        "",
        f"{'bytes per round':18s} {'up/client':>14s} {'up/round':>15s} {'down/client':>14s} "
        f"{'down/round':>15s} {'round-0 down':>14s}",
    ]
    for r in results:
        up = r.upload_client
        per = f"{up[0]:,}" if min(up) == max(up) else f"{min(up):,}-{max(up):,}"
        lines.append(f"{r.label:18s} {per:>14s} {sum(r.rounds[-1].up):>15,} {r.broadcast:>14,} "
                     f"{sum(r.rounds[-1].down):>15,} {r.full_state:>14,}")
    lines += ["", f"{'whole run':18s} {'up MB':>10s} {'down MB':>10s} {'comm s':>9s} "
              f"{'compute s':>10s} {'total s':>9s} {'up/FedIT':>9s} {'comm/FedIT':>11s} "
              f"{'total/FedIT':>12s}"]
    for r in results:
        t = r.totals
        lines.append(f"{r.label:18s} {t['upload_bytes'] / 1e6:>10,.1f} "
                     f"{t['download_bytes'] / 1e6:>10,.1f} {t['comm_s']:>9,.0f} "
                     f"{t['compute_s']:>10,.0f} {t['total_s']:>9,.0f} "
                     f"{_share(t, ref, 'upload_bytes'):>9s} {_share(t, ref, 'comm_s'):>11s} "
                     f"{_share(t, ref, 'total_s'):>12s}")
    lines += ["", "up/client: one client's upload in the last round (a range over segments); "
              "down/client: the broadcast delta a client that trained last round downloads; "
              "round-0 down: the full fp32 adapter. Broadcasts: union of senders' entries, "
              "independent-clients bound."]
    return "\n".join(lines)


def _share(mine: dict, ref: dict, key: str) -> str:
    return f"{100 * mine[key] / ref[key]:.1f}%" if ref[key] else "-"
