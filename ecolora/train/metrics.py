"""Text metrics on greedy generations, by name: built in, registered, or ``module:function``.

Why a registry: exact match says nothing about open-ended answers (it is 0% on Dolly whatever
the model does), so evaluation also scores what the model generates against the reference, and
the right score depends on the task. A metric is any callable
``metric(predictions: list[str], references: list[str]) -> float`` (a mean in [0, 1] by
convention). ``data.metrics`` names them:

* built in: ``exact_match`` (the generated answer equals the reference after
  ``data.answer_extract``'s rule) and ``rouge_l`` (ROUGE-L F1 from Google's ``rouge-score``,
  the reference implementation of ROUGE-1.5.5, with its Porter stemmer; no download);
* a package's entry point in the group ``ecolora.metrics`` (``pyproject.toml``:
  ``[project.entry-points."ecolora.metrics"] bleu = "mypkg.metrics:bleu"``);
* ``module:function``, imported from the Python path.

The empty list is ``auto``: ROUGE-L for SFT on a data file whose answers are compared whole
(open-ended text), nothing for the embedded task, GSM8K-style extraction or DPO, so default
runs cost no generation they do not need. ``none`` turns generated metrics off.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from ecolora.errors import ConfigError

Metric = Callable[[list[str], list[str]], float]
ENTRY_POINT_GROUP = "ecolora.metrics"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (longest common subsequence of stemmed, lower-cased word tokens)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure
              for pred, ref in zip(predictions, references, strict=True)]
    return float(sum(scores) / len(scores)) if scores else 0.0


def exact_match(rule: str = "exact") -> Metric:
    """Share of generations whose extracted answer equals the reference's (``rule``)."""
    from ecolora.train.evaluate import extract_answer

    def metric(predictions: list[str], references: list[str]) -> float:
        hits = []
        for pred, ref in zip(predictions, references, strict=True):
            want = extract_answer(ref, rule)
            hits.append(want is not None and extract_answer(pred, rule) == want)
        return float(sum(hits) / len(hits)) if hits else 0.0

    return metric


def resolve_metrics(names: Sequence[str], *, dataset: str, objective: str,
                    extract: str) -> dict[str, Metric]:
    """``data.metrics`` -> {key: callable}; keys name the ``eval_<key>`` column.

    Every metric is tried once on a toy pair, so a wrong name, an import error or a callable
    with the wrong signature is a one-line ConfigError before anything runs.
    """
    names = list(names)
    if names == ["none"]:
        return {}
    if not names:  # auto
        open_ended = dataset != "embedded" and objective == "sft" and extract == "exact"
        names = ["rouge_l"] if open_ended else []
    out: dict[str, Metric] = {}
    for name in names:
        key, fn = _lookup(name, extract)
        if key in out:
            raise ConfigError(f"data.metrics names '{key}' twice")
        _check(key, fn)
        out[key] = fn
    return out


def _lookup(name: str, extract: str) -> tuple[str, Metric]:
    if name == "rouge_l":
        return name, rouge_l
    if name == "exact_match":
        return name, exact_match(extract)
    if name == "none":
        raise ConfigError("data.metrics: 'none' cannot be combined with other metrics")
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"data.metrics: cannot import '{name}' ({exc})") from None
        return _key(attr, name), fn
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise ConfigError(f"unknown metric '{name}' in data.metrics; use exact_match, rouge_l, "
                          f"an '{ENTRY_POINT_GROUP}' entry point or module:function")
    try:
        return _key(name, name), found[0].load()
    except Exception as exc:  # a third-party entry point may fail in any way on import
        raise ConfigError(f"data.metrics: entry point '{name}' fails to load ({exc})") from None


def _key(key: str, name: str) -> str:
    if not _NAME.match(key):
        raise ConfigError(f"data.metrics: '{name}' must name a Python identifier")
    return key


def _check(key: str, fn: object) -> None:
    """A metric must take (predictions, references) and return a finite number."""
    if not callable(fn):
        raise ConfigError(f"data.metrics: '{key}' is not callable")
    try:
        value = fn(["a b"], ["a b"])
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    except Exception as exc:  # the user's code: any failure is reported in one line
        raise ConfigError(f"data.metrics: '{key}'(predictions, references) fails: "
                          f"{type(exc).__name__}: {exc}") from None
    if not ok:
        raise ConfigError(f"data.metrics: '{key}' must return a finite number, got {value!r}")


def score(metrics: dict[str, Metric], predictions: list[str],
          references: list[str]) -> dict[str, float]:
    """``{"eval_<key>": value}`` for every metric."""
    return {f"eval_{key}": float(fn(predictions, references)) for key, fn in metrics.items()}
