"""Evaluation as a runtime runs it: the run's objective and answer rule, and the samples file.

Every runtime (simulation, Flower server) evaluates the global adapters the same way, so the
options come from the ``RunSetup`` here, once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecolora.runtime.setup import RunSetup
from ecolora.train.evaluate import evaluate, generate_samples


def eval_options(setup: RunSetup) -> dict[str, Any]:
    """Keyword arguments of ``train.evaluate.evaluate`` for this run."""
    return {"objective": setup.objective, "tokenizer": setup.tokenizer,
            "extract": setup.answer_extract, "max_new_tokens": setup.cfg.model.max_new_tokens,
            "text_metrics": setup.text_metrics}


def evaluate_global(setup: RunSetup, params: list[np.ndarray], round_: int) -> dict[str, float]:
    """Metrics of the global adapters; a few generated samples go to ``setup.on_samples``."""
    setup.threads.use_best()
    metrics = evaluate(setup.model, params, setup.eval_data, setup.tokenizer.pad_token_id,
                       **eval_options(setup))
    emit_samples(setup, params, round_)
    return metrics


def emit_samples(setup: RunSetup, params: list[np.ndarray], round_: int) -> None:
    """Greedy answers to the first ``data.eval_samples`` eval prompts, tagged with the round."""
    if setup.on_samples is None or setup.cfg.data.eval_samples <= 0:
        return
    rows = generate_samples(setup.model, params, setup.eval_data, setup.tokenizer,
                            setup.cfg.data.eval_samples, setup.cfg.model.max_new_tokens,
                            setup.answer_extract)
    setup.on_samples([{"round": round_, **row} for row in rows])


def evaluate_client(setup: RunSetup, params: list[np.ndarray],
                    local: list[np.ndarray] | None) -> dict[str, float]:
    """One client's personalized model (FedSA-LoRA keeps B per client): the global shared
    tensors with its own local ones (None: never sampled, still the initial ones)."""
    setup.threads.use_best()
    return evaluate(setup.model, setup.method.client_start(params, local), setup.eval_data,
                    setup.tokenizer.pad_token_id, **eval_options(setup))


def mean_metrics(scores: list[dict[str, float]]) -> dict[str, float]:
    """The unweighted mean over clients, as FedSA-LoRA's evaluation averages per-client
    results; every client is evaluated on the common eval set."""
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
