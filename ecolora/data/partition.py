"""Reproducible client partitions of a dataset (numpy; flwr-datasets for the pathological one).

Why a category-driven Dirichlet split: federated fine-tuning papers (FedIT, EcoLoRA) simulate
non-IID clients by label skew, drawing for each category the share each client receives from
Dirichlet(alpha), as FedML and flwr-datasets' ``DirichletPartitioner`` do. Small ``alpha`` gives
clients few, dominant categories; large ``alpha`` approaches an IID split. Everything is driven by
one ``numpy.random.Generator`` seeded by ``seed``, so the same arguments give the same clients on
every machine, and the result is a true partition: every index is used exactly once.

Schemes: ``iid``; ``dirichlet`` (label skew); ``pathological``: each client holds
``categories_per_client`` categories (flwr-datasets' ``PathologicalPartitioner``, first category
assigned round robin so every category is used when clients >= categories; a category no client
drew is left out, as in that partitioner); ``quantity``: IID content, client sizes drawn from
Dirichlet(alpha) (quantity skew, Li et al. 2022 "NIID-Bench").

Why iid/dirichlet/quantity are the project's own few lines and not flwr-datasets': they are the
defaults every run uses, so they must not need an optional package (flwr-datasets pins
``datasets`` and imports it, seconds on a loaded machine), and the published runs in the README
were made with exactly this Dirichlet draw; flwr-datasets' ``DirichletPartitioner`` is the same
algorithm with a different draw order. The pathological partitioner has real assignment logic,
so that one is reused.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ecolora.errors import ConfigError, DataError

SCHEMES = ("iid", "dirichlet", "pathological", "quantity")
MAX_DIRICHLET_DRAWS = 200


def partition_indices(
    categories: Sequence[str],
    num_clients: int,
    scheme: str = "dirichlet",
    alpha: float = 0.5,
    seed: int = 0,
    min_per_client: int = 1,
    categories_per_client: int = 2,
) -> list[np.ndarray]:
    """Split example indices ``0..len(categories)-1`` among ``num_clients`` clients.

    Returns one sorted int64 array per client. ``"iid"`` shuffles and splits into near-equal
    parts; ``"dirichlet"`` splits each category by Dirichlet(alpha) proportions and redraws (at
    most ``MAX_DIRICHLET_DRAWS`` times) until every client has ``min_per_client`` (>= 1)
    examples. Categories are visited in sorted order, not order of first appearance.
    Bad arguments raise ``ConfigError``; data too small or too skewed raises ``DataError``.
    """
    _check_args(num_clients, scheme, alpha, seed, min_per_client)
    labels = _labels(categories)
    n = len(labels)
    if n < num_clients * min_per_client:
        raise DataError(
            f"cannot give {num_clients} clients at least {min_per_client} example(s) "
            f"each from {n} example(s)"
        )
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return _iid(n, num_clients, rng)
    if scheme == "quantity":
        return _quantity(n, num_clients, alpha, min_per_client, rng)
    if scheme == "pathological":
        return _pathological(labels, num_clients, categories_per_client, min_per_client, seed)
    return _dirichlet(labels, num_clients, alpha, min_per_client, rng)


def partition_summary(categories: Sequence[str], parts: Sequence[np.ndarray],
                      scheme: str = "") -> dict[str, Any]:
    """Per-client counts per category, as plain ints (JSON-ready; rows of a heatmap).

    Returns ``{"categories": [...sorted names], "counts": [[per category] per client],
    "sizes": [per client], "total": n}``, plus ``"note"`` when ``scheme`` is a label-skew split
    that the data cannot give (see ``fallback_note``).
    """
    labels = _labels(categories)
    names, codes = np.unique(labels, return_inverse=True)
    counts: list[list[int]] = []
    for client, part in enumerate(parts):
        index = np.asarray(part, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(labels)):
            raise ConfigError(f"client {client} holds an index outside 0..{len(labels) - 1}")
        row = np.bincount(codes[index], minlength=len(names))
        counts.append([int(c) for c in row])
    summary: dict[str, Any] = {
        "categories": [str(name) for name in names],
        "counts": counts,
        "sizes": [sum(row) for row in counts],
        "total": len(labels),
    }
    note = fallback_note(len(names), scheme)
    if note:
        summary["note"] = note
    return summary


def fallback_note(num_categories: int, scheme: str) -> str:
    """What a label-skew split becomes on data with a single category ("" when nothing to say).

    Data without categories (HH-RLHF, most chat sets) is one category "", and a Dirichlet split
    of one category only draws the client sizes: a size-skew split, not the label skew the
    scheme promises. That is said out loud instead of happening silently.
    """
    if num_categories > 1 or scheme not in ("dirichlet", "pathological"):
        return ""
    what = ("only the client sizes are skewed (Dirichlet(alpha) sizes, as partition=quantity)"
            if scheme == "dirichlet" else "every client holds that one category")
    return (f"note: the data has a single category (no categories given), so partition="
            f"{scheme} has no labels to skew: {what}; set data.category_field to a column to "
            "split by label")


def _check_args(
    num_clients: int, scheme: str, alpha: float, seed: int, min_per_client: int
) -> None:
    """Reject arguments no dataset could satisfy, before touching the data."""
    if not _is_int(num_clients) or num_clients < 1:
        raise ConfigError(f"num_clients must be an integer >= 1, got {num_clients!r}")
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unknown partition scheme {scheme!r}; expected one of {', '.join(SCHEMES)}"
        )
    if scheme in ("dirichlet", "quantity") and (
        isinstance(alpha, bool)
        or not isinstance(alpha, int | float)
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise ConfigError(f"alpha must be a finite number > 0, got {alpha!r}")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if not _is_int(min_per_client) or min_per_client < 1:
        # A client without examples cannot run a local step, so 0 is never meaningful.
        raise ConfigError(f"min_per_client must be an integer >= 1, got {min_per_client!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _labels(categories: Sequence[str]) -> np.ndarray:
    """Categories as a string array; all-"" data is naturally one category."""
    labels = np.asarray(list(categories), dtype=str)
    return labels.reshape(-1)


def _iid(n: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled split into sizes that differ by at most one."""
    order = rng.permutation(n)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_clients)]


def _dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    min_per_client: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Label-skew Dirichlet split, redrawn until every client is big enough."""
    _, codes = np.unique(labels, return_inverse=True)
    by_category = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
    smallest = 0
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts = _dirichlet_draw(by_category, num_clients, alpha, rng)
        smallest = min(len(part) for part in parts)
        if smallest >= min_per_client:
            return [np.sort(part).astype(np.int64) for part in parts]
    raise DataError(
        f"Dirichlet partition (alpha={alpha}, {len(by_category)} categories, {num_clients} "
        f"clients) left a client with {smallest} < {min_per_client} examples after "
        f"{MAX_DIRICHLET_DRAWS} draws; raise alpha, or lower num_clients or min_per_client"
    )


def _dirichlet_draw(
    by_category: list[np.ndarray], num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """One draw: each category's shuffled indices cut at its cumulative client proportions."""
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for indices in by_category:
        shuffled = rng.permutation(indices)
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(shuffled)).astype(np.int64)
        for client, piece in enumerate(np.split(shuffled, cuts)):
            pieces[client].append(piece)
    return [np.concatenate(chunks) for chunks in pieces]


def _quantity(
    n: int, num_clients: int, alpha: float, min_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Quantity skew: a shuffled split whose sizes are min + Dirichlet(alpha) shares of the rest.

    Sizes are rounded by largest remainder, so they sum to ``n`` exactly.
    """
    spare = n - num_clients * min_per_client
    shares = rng.dirichlet(np.full(num_clients, alpha)) * spare
    sizes = np.floor(shares).astype(np.int64)
    order = np.argsort(-(shares - sizes), kind="stable")
    sizes[order[: spare - int(sizes.sum())]] += 1
    sizes += min_per_client
    perm = rng.permutation(n)
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(part).astype(np.int64) for part in np.split(perm, cuts)]


def _pathological(
    labels: np.ndarray, num_clients: int, per_client: int, min_per_client: int, seed: int
) -> list[np.ndarray]:
    """Each client gets ``per_client`` categories via flwr-datasets' PathologicalPartitioner."""
    names = np.unique(labels)
    if not _is_int(per_client) or not 1 <= per_client <= len(names):
        raise ConfigError(f"categories_per_client must be in [1, {len(names)}] (the number of "
                          f"categories), got {per_client!r}")
    try:
        import datasets
        from flwr_datasets.partitioner import PathologicalPartitioner
    except ImportError:
        raise ConfigError("partition=pathological needs flwr-datasets "
                          "(pip install 'ecolora[data]')") from None
    table = datasets.Dataset.from_dict({"category": labels.tolist(),
                                        "index": np.arange(len(labels)).tolist()})
    partitioner = PathologicalPartitioner(
        num_partitions=num_clients, partition_by="category",
        num_classes_per_partition=per_client, class_assignment_mode="first-deterministic",
        shuffle=True, seed=seed,
    )
    partitioner.dataset = table
    try:
        with warnings.catch_warnings():  # "classes will NOT be used": shown in our summary
            warnings.simplefilter("ignore")
            parts = [np.sort(np.asarray(partitioner.load_partition(k)["index"], dtype=np.int64))
                     for k in range(num_clients)]
    except ValueError as exc:
        raise DataError(f"pathological partition impossible: {str(exc).splitlines()[0]}") from None
    smallest = min(len(p) for p in parts)
    if smallest < min_per_client:
        raise DataError(f"pathological partition left a client with {smallest} < "
                        f"{min_per_client} examples; lower the number of clients")
    return parts


def summary_text(summary: dict[str, Any], scheme: str = "") -> str:
    """A few lines for the terminal: per client its size and its top categories."""
    names, counts = summary["categories"], summary["counts"]
    used = sum(summary["sizes"])
    head = f"partition {scheme}: {len(counts)} clients, {used}/{summary['total']} examples"
    if used < summary["total"]:
        head += f" ({summary['total'] - used} in categories no client holds)"
    lines = [head + f", {len(names)} categories"]
    if summary.get("note"):
        lines.append(summary["note"])
    for k, row in enumerate(counts):
        top = sorted(((c, n or "-") for c, n in zip(row, names, strict=True) if c),
                     reverse=True)[:3]
        mix = ", ".join(f"{n} {c}" for c, n in top)
        lines.append(f"  client {k:3d}: {sum(row):6d}  {mix}")
    return "\n".join(lines)
