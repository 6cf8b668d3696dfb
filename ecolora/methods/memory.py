"""Server memory of each client's latest upload per segment (ecolora's own, issue 12).

With S segments, a round's segment j is uploaded by only the ~K/S clients whose turn it is; the
others trained on it too but sent another segment. With partial participation, most clients
send nothing at all. The plain per-segment mean (spec §4.4) then averages a few clients, and
the global step follows their data. Measured effect: README (it was rejected as a default).

MIFA (Gu et al., NeurIPS 2021, "Fast federated learning in the presence of arbitrary device
unavailability") keeps each client's latest update on the server and steps with the mean over
*all* clients' latest updates, fresh or not; FedStale (arXiv 2405.04171) mixes that with the
plain mean of the fresh ones. Here the memory is per client *and segment*:

    y[k, j] = client k's latest decoded update of segment j (top-k zeros included)
    step_j  = (1 - beta) * mean_{k in U_j} delta[k, j] + beta * mean_{k known for j} y[k, j]

weighted by the clients' weights, with ``beta = compress.segment_memory``. beta = 0 is the
paper's rule; under full participation with S = 1 every y is fresh and both terms are equal.
No bytes change: the memory lives on the server only and costs one adapter per client there.
A round costs one pass over the remembered updates (clients x adapter entries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ecolora.compress.segments import Piece

Params = list[np.ndarray]


@dataclass
class SegmentMemory:
    """Per client its latest update (dense, layout order) and which segments it has sent."""

    updates: dict[int, Params] = field(default_factory=dict)
    known: dict[int, set[int]] = field(default_factory=dict)
    weight: dict[int, float] = field(default_factory=dict)

    def table_mean(self, segments: Sequence[Sequence[Piece]], shapes: Sequence[int]) -> Params:
        """mean over the clients known for each segment of their latest update of it."""
        total = [np.zeros(n, dtype=np.float64) for n in shapes]
        denom = [0.0] * len(segments)
        for k, segs in self.known.items():
            w = self.weight[k]
            for j in segs:
                denom[j] += w
                for p in segments[j]:
                    total[p.tensor][p.start : p.stop] += w * self.updates[k][p.tensor][
                        p.start : p.stop]
        for j, pieces in enumerate(segments):
            if denom[j] > 0:
                for p in pieces:
                    total[p.tensor][p.start : p.stop] /= denom[j]
        return [t.astype(np.float32) for t in total]

    def remember(self, client: int, seg: int, weight: float,
                 records: Sequence[tuple[Piece, np.ndarray | None, np.ndarray]],
                 shapes: Sequence[int]) -> None:
        """Replace client's memory of segment ``seg`` by this round's decoded upload."""
        mine = self.updates.setdefault(
            client, [np.zeros(n, dtype=np.float32) for n in shapes])
        for piece, idx, vals in records:
            view = mine[piece.tensor][piece.start : piece.stop]
            if idx is None:
                view[:] = vals
            else:
                view[:] = 0.0
                view[idx] = vals
        self.known.setdefault(client, set()).add(seg)
        self.weight[client] = float(weight)


def with_memory(fresh: Params, memory: SegmentMemory, clients: Sequence[int],
                updates: Sequence[tuple[int, float, list]], segments: Sequence[Sequence[Piece]],
                shapes: Sequence[int], beta: float) -> Params:
    """Refresh the memory with this round's updates and mix its table mean into ``fresh``."""
    for client, (seg, weight, records) in zip(clients, updates, strict=True):
        memory.remember(client, seg, weight, records, shapes)
    table = memory.table_mean(segments, shapes)
    b = np.float32(beta)
    return [(1 - b) * f + b * t for f, t in zip(fresh, table, strict=True)]
