"""Options that several commands share, declared once (typer ``Annotated`` types).

``ecolora run``, ``compare``, ``sweep``, ``matrix`` and ``estimate`` take the same config,
model, data, federation, ``--set`` and progress options; each command uses these aliases, so a
flag's name and help text live here only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

NETWORK_HELP = "link preset for the modeled time: lan | wan | mobile (before --set; see knobs)"
WORKERS_HELP = ("processes running the runs (method x seed x value) side by side; with "
                "model.threads=0 each gets cores/workers torch threads, else model.threads, so "
                "keep workers x threads <= cores")

ConfigOpt = Annotated[Path | None, typer.Option(help="TOML file with [model], [fed], ... tables")]
ModelOpt = Annotated[str | None, typer.Option(help="'embedded', a HF model dir or hub name")]
DatasetOpt = Annotated[str | None, typer.Option(help="'embedded', a JSON/JSONL file or hub name")]
EvalDatasetOpt = Annotated[str | None, typer.Option(help="eval file (default: held out)")]
ClientsOpt = Annotated[int | None, typer.Option(help="number of clients K")]
RoundsOpt = Annotated[int | None, typer.Option(help="federated rounds T")]
NetworkOpt = Annotated[str | None, typer.Option(help=NETWORK_HELP)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="section.key=value; repeatable")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="no progress bar", show_default=False)]
WorkersOpt = Annotated[int, typer.Option(help=WORKERS_HELP)]
