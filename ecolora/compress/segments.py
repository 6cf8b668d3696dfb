"""Round-robin segment sharing (spec §4): split the LoRA parameters into S segments.

A segment is a tuple of ``Piece``s, each a contiguous range of one flattened tensor. With
``segment_by='module'`` every piece is a whole A or B matrix and segments are balanced by
parameter count (greedy longest-processing-time); ``'layer'`` keeps a transformer block's tensors
together; ``'flat_chunks'`` cuts the concatenated vector into S equal ranges (the FedPLoRA
reading). Client k uploads segment ``(k + t) mod S`` in round t, with k its global index so the
rotation is deterministic under partial participation (spec §4.2, Q13).
"""

from __future__ import annotations

from dataclasses import dataclass

from ecolora.compress.layout import AdapterLayout
from ecolora.errors import ConfigError


@dataclass(frozen=True)
class Piece:
    tensor: int  # index into the AdapterLayout
    start: int  # offset in the flattened tensor
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


Segment = tuple[Piece, ...]


def segment_for(client: int, round_: int, num_segments: int) -> int:
    """The segment client ``client`` uploads in round ``round_`` (spec §4.2)."""
    return (client + round_) % num_segments


def make_segments(layout: AdapterLayout, num_segments: int, segment_by: str) -> list[Segment]:
    """Cut ``layout`` into ``num_segments`` disjoint segments that together cover every entry."""
    if num_segments < 1:
        raise ConfigError(f"`num_segments` must be >= 1, got {num_segments}")
    if segment_by == "flat_chunks":
        return _flat_chunks(layout, num_segments)
    if segment_by == "module":
        units = [[i] for i in range(len(layout))]
        what = "LoRA tensors"
    elif segment_by == "layer":
        by_layer: dict[int, list[int]] = {}
        for i, t in enumerate(layout.tensors):
            by_layer.setdefault(t.layer, []).append(i)
        units = list(by_layer.values())
        what = "layers with LoRA tensors"
    else:
        raise ConfigError(f"unknown segment_by {segment_by!r}")
    if num_segments > len(units):
        raise ConfigError(
            f"num_segments={num_segments} is larger than the {len(units)} {what}; "
            f"use at most {len(units)} or segment_by=flat_chunks"
        )
    return _balance(layout, units, num_segments)


def _balance(layout: AdapterLayout, units: list[list[int]], s: int) -> list[Segment]:
    """Greedy LPT: biggest unit first onto the lightest segment; ties broken by index."""
    sizes = [sum(layout.tensors[i].numel for i in u) for u in units]
    order = sorted(range(len(units)), key=lambda u: (-sizes[u], u))
    load = [0] * s
    members: list[list[int]] = [[] for _ in range(s)]
    for u in order:
        target = min(range(s), key=lambda j: (load[j], j))
        load[target] += sizes[u]
        members[target].extend(units[u])
    return [
        tuple(Piece(i, 0, layout.tensors[i].numel) for i in sorted(m)) for m in members
    ]


def _flat_chunks(layout: AdapterLayout, s: int) -> list[Segment]:
    total = layout.numel
    if s > total:
        raise ConfigError(f"num_segments={s} is larger than the {total} LoRA parameters")
    bounds = [round(j * total / s) for j in range(s + 1)]
    segments: list[Segment] = []
    for j in range(s):
        lo, hi = bounds[j], bounds[j + 1]
        pieces, offset = [], 0
        for i, t in enumerate(layout.tensors):
            a, b = max(lo, offset), min(hi, offset + t.numel)
            if a < b:
                pieces.append(Piece(i, a - offset, b - offset))
            offset += t.numel
        segments.append(tuple(pieces))
    return segments
