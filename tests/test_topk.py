"""Fast top-k (spec §5.1) against a reference: the same set, ties to the lower index, always."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecolora.compress import sparsify
from ecolora.compress.sparsify import magnitude_keys, topk_indices


def reference(x: np.ndarray, k: int) -> np.ndarray:
    """Stable sort by (-|x|, index), NaN above +inf: the definition, in O(n log n)."""
    keys = magnitude_keys(x)
    k = max(0, min(k, keys.size))
    return np.sort(np.lexsort((np.arange(keys.size), ~keys))[:k]).astype(np.int64)


@st.composite
def arrays(draw, max_size=3000):
    n = draw(st.integers(0, max_size))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "ties", "zeros", "special", "lora"]))
    if kind == "normal":
        x = rng.standard_normal(n)
    elif kind == "ties":  # few distinct magnitudes, both signs: ties decide the answer
        x = rng.integers(-3, 4, n).astype(np.float64)
    elif kind == "zeros":  # mostly exact zeros (B at init), a few entries moved
        x = np.zeros(n)
        x[rng.integers(0, max(n, 1), n // 50)] = rng.standard_normal(n // 50)
    elif kind == "special":
        x = rng.choice(np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -1.0]), n)
    else:  # heavy-tailed rows, like a LoRA delta
        x = rng.lognormal(0, 2, n) * rng.standard_normal(n)
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int32]))
    with np.errstate(invalid="ignore", over="ignore"):
        x = x.astype(dtype) if dtype != np.int32 else np.nan_to_num(x).astype(dtype)
    k = draw(st.integers(-1, n + 1))
    return x, k


@settings(max_examples=400, deadline=None)
@given(arrays())
def test_sampled_path_equals_reference(case):
    """Force the sampled-threshold path on small inputs: exact answer either way."""
    x, k = case
    with mock.patch.object(sparsify, "EXACT_BELOW", 0), mock.patch.object(sparsify, "SAMPLE", 64):
        got = topk_indices(x, k)
    np.testing.assert_array_equal(got, reference(x, k))
    assert got.dtype == np.int64


@settings(max_examples=200, deadline=None)
@given(arrays(max_size=500), st.floats(-50, 2))
def test_bad_threshold_estimates_fall_back_to_the_exact_answer(case, sigmas):
    """A margin so low that the threshold often overshoots: the fallback keeps it exact."""
    x, k = case
    with mock.patch.object(sparsify, "EXACT_BELOW", 0), \
            mock.patch.object(sparsify, "MARGIN_SIGMAS", sigmas):
        np.testing.assert_array_equal(topk_indices(x, k), reference(x, k))


@settings(max_examples=100, deadline=None)
@given(arrays(max_size=2000))
def test_exact_path_equals_reference(case):
    x, k = case
    np.testing.assert_array_equal(topk_indices(x, k), reference(x, k))


@pytest.mark.parametrize("density", [0.001, 0.01, 0.1])
@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_large_inputs_use_the_sample_and_match(density, kind):
    rng = np.random.default_rng(3)
    n = 3 * sparsify.EXACT_BELOW + 7
    x = rng.standard_normal(n).astype(np.float32)
    if kind == "ties":
        x = np.round(x * 4) / 4
    k = int(density * n)
    np.testing.assert_array_equal(topk_indices(x, k), reference(x, k))
    np.testing.assert_array_equal(topk_indices(x.reshape(-1, 1), k), reference(x, k))


def test_nan_counts_as_largest_and_ties_prefer_low_indices():
    x = np.array([1.0, np.nan, -3.0, 3.0, 0.0, -0.0, 3.0], dtype=np.float32)
    assert topk_indices(x, 1).tolist() == [1]
    assert topk_indices(x, 3).tolist() == [1, 2, 3]
    assert topk_indices(x, 6).tolist() == [0, 1, 2, 3, 4, 6]
