"""Everything a run needs, built once from a validated ``RunConfig``: model, data, method.

Input problems (missing files, bad models, impossible segmentations) surface here, before the
run folder is created, so a failed start leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ecolora.compress.layout import AdapterLayout
from ecolora.config import RunConfig
from ecolora.data.partition import partition_indices, partition_summary
from ecolora.methods import Method, build_method
from ecolora.train.batches import Example, TokenBudget, tokenize
from ecolora.train.evaluate import resolve_extract
from ecolora.train.local import gradient_probe
from ecolora.train.metrics import Metric, resolve_metrics
from ecolora.train.model import layout_of, load_model
from ecolora.train.objectives import Objective, make_objective
from ecolora.train.threads import ThreadTuner, thread_policy


@dataclass
class RunSetup:
    cfg: RunConfig
    model: object
    tokenizer: object
    layout: AdapterLayout
    method: Method
    clients: list[list[Example]]
    weights: list[float]  # p_k = |D_k| / sum_j |D_j|
    eval_data: list[Example]
    categories: list[list[str]]  # per client, the category of each example
    truncated: int
    dropped: int = 0  # examples whose prompt would not fit model.min_prompt_len
    objective: Objective = field(default_factory=Objective)  # SFT or DPO (train/objectives.py)
    answer_extract: str = "exact"  # data.answer_extract with 'auto' resolved
    text_metrics: dict[str, Metric] = field(default_factory=dict)  # data.metrics, resolved
    partition: dict = field(default_factory=dict)  # partition_summary: clients x categories
    on_samples: Callable[[list[dict]], None] | None = None  # receives generated eval samples
    threads: ThreadTuner = field(default_factory=lambda: ThreadTuner([1]))  # train/threads.py


def load_data(cfg: RunConfig) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) for the configured datasets."""
    d, seed = cfg.data, cfg.fed.seed
    if d.dataset == "embedded":
        from ecolora.data.embedded import make_records

        train = make_records(d.train_examples or 4000, seed)
    else:
        from ecolora.data.files import load_records

        train = load_records(d.dataset, fields=d.fields or None, category_field=d.category_field,
                             categories=d.categories, records=d.records)
    if d.eval_dataset:
        from ecolora.data.files import load_records

        evals = load_records(d.eval_dataset, fields=d.fields or None, limit=d.eval_examples,
                             category_field=d.category_field, categories=d.categories)
    elif d.dataset == "embedded":
        from ecolora.data.embedded import make_records

        evals = make_records(d.eval_examples, seed + 10_000)
    else:  # hold out a seeded slice of the training file
        order = np.random.default_rng([seed, 7]).permutation(len(train))
        n_eval = min(d.eval_examples, max(1, len(train) // 5))
        evals = [train[i] for i in order[:n_eval]]
        train = [train[i] for i in order[n_eval:]]
    if d.dataset != "embedded" and d.train_examples:
        train = train[: d.train_examples]
    return train, evals


def build(cfg: RunConfig) -> RunSetup:
    train, evals = load_data(cfg)
    model, tok = load_model(cfg.model, cfg.fed.seed)
    layout = layout_of(model)
    method = build_method(cfg.method, cfg.method_compress, layout)
    objective = make_objective(cfg.fed.objective, cfg.fed.dpo_beta)
    budget = TokenBudget(cfg.model.max_seq_len, cfg.model.max_prompt_len,
                         cfg.model.min_prompt_len)
    fitted, fitted_eval = (tokenize(records, tok, budget, objective.name)
                           for records in (train, evals))
    examples, eval_data = fitted.examples, fitted_eval.examples
    cats = [train[i].get("category", "") for i in fitted.kept]  # dropped examples are gone
    parts = partition_indices(cats, cfg.fed.clients, scheme=cfg.data.partition,
                              alpha=cfg.data.dirichlet_alpha, seed=cfg.fed.seed,
                              categories_per_client=cfg.data.categories_per_client)
    clients = [[examples[i] for i in idx] for idx in parts]
    sample = next((c for c in clients if c), examples)
    probe = gradient_probe(model, sample, cfg.fed.batch_size, tok.pad_token_id, objective)
    threads = thread_policy(model, cfg.model.threads, probe if sample else None)
    sizes = np.array([len(c) for c in clients], dtype=np.float64)
    extract = resolve_extract(cfg.data.answer_extract, [r["response"] for r in evals])
    return RunSetup(
        cfg=cfg, model=model, tokenizer=tok, layout=layout, method=method, clients=clients,
        weights=list(sizes / sizes.sum()), eval_data=eval_data,
        categories=[[cats[i] for i in idx] for idx in parts],
        truncated=fitted.truncated + fitted_eval.truncated,
        dropped=fitted.dropped + fitted_eval.dropped,
        objective=objective, partition=partition_summary(cats, parts, cfg.data.partition),
        answer_extract=extract, threads=threads,
        text_metrics=resolve_metrics(cfg.data.metrics, dataset=cfg.data.dataset,
                                     objective=objective.name, extract=extract),
    )
