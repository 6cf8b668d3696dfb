"""`ecolora inspect PAYLOAD`: decode a payload file and print its header and records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecolora.errors import DataError


def inspect(
    payload: Annotated[Path, typer.Argument(help="a payload file written by ecolora")],
    max_numel: Annotated[int, typer.Option(help="refuse tensors larger than this")] = 1 << 28,
) -> None:
    """Validate a payload like a server would and summarize it; corrupt input exits 2."""
    from ecolora.compress import wire

    if not payload.is_file():
        raise DataError(f"payload file not found: {payload}")
    buf = payload.read_bytes()
    msg = wire.decode(buf, max_numel=max_numel)
    kind = "update" if msg.kind == wire.KIND_UPDATE else "broadcast"
    seg = "all" if msg.segment == wire.ALL_SEGMENTS else msg.segment
    typer.echo(f"{kind} v{msg.version}, round {msg.round}, segment {seg}, dtype {msg.dtype}, "
               f"{len(msg.records)} records, {len(buf)} bytes")
    for r in msg.records:
        k = r.n if r.indices is None else len(r.indices)
        typer.echo(f"  tensor {r.tensor} [{r.start}:{r.start + r.n}] kept {k}/{r.n}")
