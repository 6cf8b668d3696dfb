"""Honest metrics: ROUGE-L and pluggable generated-text metrics, preference ties, and the stated
fallback when the data has no categories."""

from __future__ import annotations

import numpy as np
import pytest

from ecolora.config import DataConfig
from ecolora.data.partition import partition_summary, summary_text
from ecolora.errors import ConfigError
from ecolora.train import metrics as tm
from ecolora.train.evaluate import preference_accuracy


def first_word_match(predictions: list[str], references: list[str]) -> float:
    """A user metric, loaded by the tests as 'test_metrics:first_word_match'."""
    hits = [p.split()[:1] == r.split()[:1] for p, r in zip(predictions, references, strict=True)]
    return sum(hits) / len(hits)


def test_rouge_l_scores_overlap_not_identity() -> None:
    assert tm.rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == 1.0
    assert tm.rouge_l(["dogs bark"], ["the cat sat"]) == 0.0
    partial = tm.rouge_l(["the cat sat", "x"], ["the cat sat on the mat", "x"])
    assert partial == pytest.approx((2 * 1.0 * 0.5 / 1.5 + 1.0) / 2)  # F1 of P=1, R=1/2, and 1
    assert tm.rouge_l(["Cats are sitting"], ["cat sits"]) > 0  # stemmed, case-folded


@pytest.mark.parametrize(("dataset", "objective", "extract", "want"), [
    ("dolly.jsonl", "sft", "exact", ["rouge_l"]),  # open-ended text
    ("embedded", "sft", "exact", []),  # the default run generates nothing extra
    ("gsm8k.jsonl", "sft", "gsm8k", []),  # answer extraction is its metric
    ("hh.jsonl", "dpo", "exact", []),
])
def test_auto_metrics(dataset: str, objective: str, extract: str, want: list[str]) -> None:
    got = tm.resolve_metrics([], dataset=dataset, objective=objective, extract=extract)
    assert list(got) == want


def test_named_plugged_and_registered_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    got = tm.resolve_metrics(["exact_match", "rouge_l", "test_metrics:first_word_match"],
                             dataset="embedded", objective="sft", extract="last_number")
    assert list(got) == ["exact_match", "rouge_l", "first_word_match"]
    scores = tm.score(got, ["it is 7", "b c"], ["7", "a c"])
    assert scores == {"eval_exact_match": 0.5, "eval_rouge_l": pytest.approx(0.5 * 0.5 + 0.5 * 0.5),
                      "eval_first_word_match": 0.0}

    class EntryPoint:
        name = "always_one"

        def load(self):
            return lambda predictions, references: 1.0

    monkeypatch.setattr(tm, "entry_points", lambda group: [EntryPoint()])
    plugged = tm.resolve_metrics(["always_one"], dataset="x", objective="sft", extract="exact")
    assert tm.score(plugged, ["a"], ["b"]) == {"eval_always_one": 1.0}
    assert tm.resolve_metrics(["none"], dataset="x.jsonl", objective="sft", extract="exact") == {}


@pytest.mark.parametrize(("names", "message"), [
    (["bleu"], "unknown metric 'bleu'"),
    (["no_such_module_x:f"], "cannot import 'no_such_module_x:f'"),
    (["math:fsum"], "fails: TypeError"),  # wrong signature: caught before the run starts
    (["test_metrics:np"], "is not callable"),
    (["rouge_l", "rouge_l"], "twice"),
    (["none", "rouge_l"], "cannot be combined"),
])
def test_bad_metric_names_are_one_line_errors(names: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        tm.resolve_metrics(names, dataset="x.jsonl", objective="sft", extract="exact")
    assert "\n" not in str(err.value)


def test_metrics_knob_is_a_list_of_names() -> None:
    assert DataConfig(metrics=["rouge_l"]).metrics == ["rouge_l"]
    with pytest.raises(ConfigError, match="metrics"):
        DataConfig(metrics=[""])


def test_ties_are_half_wins_and_reported_apart() -> None:
    assert preference_accuracy([0.0, 0.0, 0.0]) == (0.0, 1.0, 0.5)  # the base: all ties, chance
    assert preference_accuracy([0.5, 0.0, -1.0, 2.0]) == (0.5, 0.25, 0.625)
    assert preference_accuracy([]) == (0.0, 0.0, 0.0)


def test_no_categories_fallback_is_stated() -> None:
    parts = [np.arange(0, 10), np.arange(10, 50)]
    summary = partition_summary([""] * 50, parts, "dirichlet")
    assert "single category" in summary["note"] and "partition=quantity" in summary["note"]
    assert summary["note"] in summary_text(summary, "dirichlet")
    assert "note" not in partition_summary([""] * 50, parts, "iid")
    assert "note" not in partition_summary(["a", "b"] * 25, parts, "dirichlet")
