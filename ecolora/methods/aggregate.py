"""Server-side math as free functions (Flower's strategy_utils style): no I/O, numpy only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecolora.compress.segments import Piece

# One decoded client update: (segment id, weight p_k, [(piece, indices or None, values)]).
Update = tuple[int, float, list[tuple[Piece, np.ndarray | None, np.ndarray]]]


def aggregate_segments(
    updates: Sequence[Update], segments: Sequence[Sequence[Piece]], shapes: Sequence[int],
    normalize: str = "uploaders_weight",
) -> list[np.ndarray]:
    """Weighted mean of (sparse) deltas per segment (spec §4.4).

    Segment s becomes sum_{k in U_s} p_k * delta_k[s] / sum_{k in U_s} p_k, where U_s are the
    clients that uploaded s (``normalize='all_sampled_weight'`` divides by the weight of every
    sampled client instead). A segment nobody uploaded gets a zero delta, so it keeps the
    previous global value. Entries a client did not keep count as zero in its delta.

    ``normalize='senders_weight'`` divides each entry by the weight of the clients that actually
    sent it, so an entry kept by one of five uploaders is not shrunk five-fold by top-k: the
    mean of what was sent rather than of sent-or-zero (the server step for partially covered
    segments that spec §4.4 leaves open).
    """
    total = [np.zeros(n, dtype=np.float64) for n in shapes]
    per_entry = normalize == "senders_weight"
    senders = [np.zeros(n, dtype=np.float64) for n in shapes] if per_entry else []
    seg_weight = [0.0] * len(segments)
    for seg, weight, records in updates:
        seg_weight[seg] += weight
        for piece, idx, vals in records:
            view = total[piece.tensor][piece.start : piece.stop]
            if idx is None:
                view += weight * vals
            else:
                view[idx] += weight * vals
            if per_entry:
                got = senders[piece.tensor][piece.start : piece.stop]
                if idx is None:
                    got += weight
                else:
                    got[idx] += weight
    if per_entry:
        for t, w in zip(total, senders, strict=True):
            np.divide(t, w, out=t, where=w > 0)
        return [t.astype(np.float32) for t in total]
    sampled = sum(w for _, w, _ in updates)
    for seg, pieces in enumerate(segments):
        denom = seg_weight[seg] if normalize == "uploaders_weight" else sampled
        if denom > 0:
            for p in pieces:
                total[p.tensor][p.start : p.stop] /= denom
    return [t.astype(np.float32) for t in total]


def sent_entries(updates: Sequence[Update], shapes: Sequence[int]) -> list[np.ndarray]:
    """Per tensor, a mask of the entries at least one client sent (lazy server optimizers)."""
    out = [np.zeros(n, dtype=bool) for n in shapes]
    for _, _, records in updates:
        for piece, idx, _ in records:
            view = out[piece.tensor][piece.start : piece.stop]
            if idx is None:
                view[:] = True
            else:
                view[idx] = True
    return out
