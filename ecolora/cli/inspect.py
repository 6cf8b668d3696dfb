"""`ecolora inspect PAYLOAD`: decode a payload file and print its header and records.

Every method's payload is one of two formats with the same 20-byte header: ``compress.wire``
(Golomb-Rice positions: ecolora, fedit and the other dense or Rice-coded methods) or
``methods.rawpos`` (raw int32 positions: topk-ef, eco-no-golomb), told apart by the version
byte. ``ecolora run --save-payloads`` writes real ones into the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecolora.errors import DataError


def decode_any(buf: bytes, max_numel: int):
    """Decode a payload of any method's format; returns (payload, format description)."""
    from ecolora.compress import wire
    from ecolora.methods import rawpos

    if len(buf) > 4 and buf[:4] == wire.MAGIC and buf[4] == rawpos.RAW_VERSION:
        return rawpos.decode(buf, max_numel=max_numel), "raw int32 positions (methods.rawpos)"
    msg = wire.decode(buf, max_numel=max_numel)
    return msg, f"Golomb-Rice positions (compress.wire v{msg.version})"


def inspect(
    payload: Annotated[Path, typer.Argument(help="a payload file written by ecolora (see "
                                            "ecolora run --save-payloads)")],
    max_numel: Annotated[int, typer.Option(help="refuse tensors larger than this")] = 1 << 28,
) -> None:
    """Validate a payload like a server would and summarize it; corrupt input exits 2."""
    from ecolora.compress import wire

    if not payload.is_file():
        raise DataError(f"payload file not found: {payload}")
    try:
        buf = payload.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read payload {payload}: {exc.strerror or exc}") from None
    msg, fmt = decode_any(buf, max_numel)
    kind = "update" if msg.kind == wire.KIND_UPDATE else "broadcast"
    seg = "all" if msg.segment == wire.ALL_SEGMENTS else msg.segment
    kept = sum(r.n if r.indices is None else len(r.indices) for r in msg.records)
    total = sum(r.n for r in msg.records)
    typer.echo(f"{kind}, {fmt}, round {msg.round}, segment {seg}, dtype {msg.dtype}, "
               f"{len(msg.records)} records, {kept}/{total} values kept, {len(buf)} bytes")
    for r in msg.records:
        k = r.n if r.indices is None else len(r.indices)
        typer.echo(f"  tensor {r.tensor} [{r.start}:{r.start + r.n}] kept {k}/{r.n}")
