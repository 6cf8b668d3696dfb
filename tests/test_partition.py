"""Tests for ecolora.data.partition: a true, reproducible partition under every scheme."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecolora.data.files import load_records
from ecolora.data.partition import partition_indices, partition_summary
from ecolora.errors import ConfigError, DataError

DOLLY_15K = Path(__file__).resolve().parents[2] / "shared" / "data" / "dolly-15k.jsonl"


def assert_partition(parts: list[np.ndarray], n: int, num_clients: int, min_size: int) -> None:
    assert len(parts) == num_clients
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)  # sorted, no duplicates within a client
        assert len(part) >= min_size
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(n))


CATEGORIES = ["a"] * 40 + ["b"] * 30 + ["c"] * 20 + ["d"] * 10


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_true_partition_and_deterministic(scheme: str) -> None:
    parts = partition_indices(CATEGORIES, 5, scheme=scheme, alpha=0.5, seed=3)
    assert_partition(parts, len(CATEGORIES), 5, 1)
    again = partition_indices(CATEGORIES, 5, scheme=scheme, alpha=0.5, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(parts, again, strict=True))
    other = partition_indices(CATEGORIES, 5, scheme=scheme, alpha=0.5, seed=4)
    assert not all(np.array_equal(x, y) for x, y in zip(parts, other, strict=True))


def test_iid_sizes_differ_by_at_most_one() -> None:
    parts = partition_indices(CATEGORIES, 7, scheme="iid")
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 100


def test_small_alpha_is_more_skewed_than_large() -> None:
    categories = [f"c{i % 8}" for i in range(4000)]

    def mean_dominant_share(alpha: float) -> float:
        parts = partition_indices(categories, 10, alpha=alpha, seed=0)
        counts = np.array(partition_summary(categories, parts)["counts"], dtype=float)
        return float(np.mean(counts.max(axis=1) / counts.sum(axis=1)))

    assert mean_dominant_share(0.1) > 0.5 > mean_dominant_share(100.0)


def test_blank_categories_are_one_category() -> None:
    parts = partition_indices([""] * 50, 4, alpha=1.0, seed=1, min_per_client=5)
    assert_partition(parts, 50, 4, 5)
    summary = partition_summary([""] * 50, parts)
    assert summary["categories"] == [""]


def test_min_per_client_is_met_by_redrawing() -> None:
    parts = partition_indices(CATEGORIES, 4, alpha=0.3, seed=0, min_per_client=15)
    assert_partition(parts, 100, 4, 15)


def test_unsatisfiable_skew_is_data_error() -> None:
    with pytest.raises(DataError, match="raise alpha") as exc:
        partition_indices(["x", "y"] * 50, 10, alpha=0.001, seed=0, min_per_client=5)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("n", "clients", "min_size"), [(3, 4, 1), (0, 1, 1), (10, 3, 4), (11, 3, 4)]
)
def test_too_few_examples_is_data_error(n: int, clients: int, min_size: int) -> None:
    with pytest.raises(DataError, match="cannot give"):
        partition_indices(["a"] * n, clients, min_per_client=min_size)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": 2.0}, "num_clients"),
        ({"num_clients": 2, "scheme": "shards"}, "unknown partition scheme 'shards'"),
        ({"num_clients": 2, "alpha": 0.0}, "alpha"),
        ({"num_clients": 2, "alpha": -1.0}, "alpha"),
        ({"num_clients": 2, "alpha": float("nan")}, "alpha"),
        ({"num_clients": 2, "seed": -1}, "seed"),
        ({"num_clients": 2, "min_per_client": 0}, "min_per_client"),
    ],
)
def test_invalid_arguments_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        partition_indices(CATEGORIES, **kwargs)  # type: ignore[arg-type]


def test_alpha_is_ignored_for_iid() -> None:
    parts = partition_indices(CATEGORIES, 2, scheme="iid", alpha=0.0)
    assert_partition(parts, 100, 2, 1)


def test_summary_counts() -> None:
    categories = ["b", "a", "b", "c", "a"]
    parts = [np.array([0, 1], dtype=np.int64), np.array([2, 3, 4], dtype=np.int64)]
    assert partition_summary(categories, parts) == {
        "categories": ["a", "b", "c"],
        "counts": [[1, 1, 0], [1, 1, 1]],
        "sizes": [2, 3],
        "total": 5,
    }
    with pytest.raises(ConfigError, match="client 1"):
        partition_summary(categories, [np.array([0]), np.array([5])])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    categories=st.lists(st.sampled_from(["", "x", "y", "z"]), min_size=1, max_size=120),
    num_clients=st.integers(1, 12),
    scheme=st.sampled_from(["iid", "dirichlet", "quantity"]),
    alpha=st.floats(0.05, 50.0),
    seed=st.integers(0, 2**32 - 1),
    min_per_client=st.integers(1, 4),
)
def test_partition_property(
    categories: list[str],
    num_clients: int,
    scheme: str,
    alpha: float,
    seed: int,
    min_per_client: int,
) -> None:
    kwargs = {"scheme": scheme, "alpha": alpha, "seed": seed, "min_per_client": min_per_client}
    n = len(categories)
    try:
        parts = partition_indices(categories, num_clients, **kwargs)  # type: ignore[arg-type]
    except DataError:
        # Legitimate only when the data is too small, or a skewed draw kept failing.
        assert scheme == "dirichlet" or n < num_clients * min_per_client
        return
    assert_partition(parts, n, num_clients, min_per_client)
    again = partition_indices(categories, num_clients, **kwargs)  # type: ignore[arg-type]
    assert all(np.array_equal(x, y) for x, y in zip(parts, again, strict=True))
    summary = partition_summary(categories, parts)
    assert summary["sizes"] == [len(p) for p in parts]
    assert sum(summary["sizes"]) == n


def test_real_dolly_dirichlet_over_10_clients() -> None:
    if not DOLLY_15K.is_file():
        pytest.skip(f"{DOLLY_15K} not present")
    records = load_records(DOLLY_15K)
    categories = [r["category"] for r in records]
    assert len(records) == 15_011 and len(set(categories)) == 8
    parts = partition_indices(categories, 10, scheme="dirichlet", alpha=0.5, seed=0)
    assert_partition(parts, 15_011, 10, 1)
    summary = partition_summary(categories, parts)
    assert len(summary["categories"]) == 8 and summary["total"] == 15_011
    # Label skew: clients do not all see the global category mix.
    counts = np.array(summary["counts"], dtype=float)
    shares = counts / counts.sum(axis=1, keepdims=True)
    assert np.max(np.abs(shares - counts.sum(axis=0) / counts.sum())) > 0.1


# --------------------------------------------------------------------------- new schemes


def test_pathological_gives_each_client_its_categories() -> None:
    pytest.importorskip("flwr_datasets")
    categories = [f"c{i % 6}" for i in range(300)]
    for per_client in (1, 2):
        parts = partition_indices(categories, 6, scheme="pathological", seed=5,
                                  categories_per_client=per_client)
        summary = partition_summary(categories, parts)
        held = [sum(1 for c in row if c) for row in summary["counts"]]
        assert held == [per_client] * 6
        # clients >= categories: the round-robin first category uses all of them, none is lost
        assert_partition(parts, 300, 6, 1)
        again = partition_indices(categories, 6, scheme="pathological", seed=5,
                                  categories_per_client=per_client)
        assert all(np.array_equal(x, y) for x, y in zip(parts, again, strict=True))


def test_pathological_bad_arguments() -> None:
    pytest.importorskip("flwr_datasets")
    with pytest.raises(ConfigError, match=r"categories_per_client must be in \[1, 4\]"):
        partition_indices(CATEGORIES, 2, scheme="pathological", categories_per_client=5)


def test_quantity_skew_sizes_and_iid_content() -> None:
    categories = [f"c{i % 4}" for i in range(2000)]
    skewed = partition_indices(categories, 8, scheme="quantity", alpha=0.3, seed=1,
                               min_per_client=5)
    assert_partition(skewed, 2000, 8, 5)
    flat = partition_indices(categories, 8, scheme="quantity", alpha=1000.0, seed=1)
    sizes = [len(p) for p in skewed]
    assert max(sizes) / min(sizes) > 5  # small alpha: very different sizes
    assert max(len(p) for p in flat) / min(len(p) for p in flat) < 1.3
    again = partition_indices(categories, 8, scheme="quantity", alpha=0.3, seed=1,
                              min_per_client=5)
    assert all(np.array_equal(x, y) for x, y in zip(skewed, again, strict=True))
    big = max(skewed, key=len)
    shares = np.bincount([int(categories[i][1]) for i in big], minlength=4) / len(big)
    assert np.all(np.abs(shares - 0.25) < 0.1)  # content stays IID


def test_summary_text_and_heatmap(tmp_path: Path) -> None:
    from ecolora.data.partition import summary_text
    from ecolora.report.partition import plot_partition

    parts = partition_indices(CATEGORIES, 3, alpha=0.5, seed=0)
    summary = partition_summary(CATEGORIES, parts)
    text = summary_text(summary, "dirichlet")
    assert text.splitlines()[0] == "partition dirichlet: 3 clients, 100/100 examples, 4 categories"
    assert len(text.splitlines()) == 4
    png = plot_partition(summary, tmp_path)
    assert png.name == "partition.png" and png.read_bytes()[:4] == b"\x89PNG"
