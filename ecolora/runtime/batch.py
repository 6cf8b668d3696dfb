"""Many simulations in one process, sharing what they can: the engine of compare and sweep.

A comparison must run every method on the same data, partition, LoRA init and client batches.
``runtime.setup.build`` already derives all of these from the seed; here one built setup (base
model, tokenized clients, eval set) serves every method of a seed: only the ``Method`` object and
the config are swapped, and the LoRA tensors and torch RNG are reset to their state right after
the build, so each run starts exactly where a fresh ``ecolora run`` with the same config would.
Setups are rebuilt only when model, data or federation knobs change (a new seed, or a sweep over
clients, alpha or rank), and only the current one is held in memory.

``workers > 1`` runs each job in a worker process that builds its own setup (the same one, since
it is derived from the config), so a comparison uses several cores; results come back in job
order and equal a sequential run's (only the measured ``compute_s`` differs). Jobs are not
grouped by setup there: one job per task balances the workers, and a build costs seconds
against a run's minutes. A worker's ``model.threads=0`` becomes cores // workers.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ecolora.config import RunConfig, merge
from ecolora.errors import ConfigError
from ecolora.train.threads import core_share


@dataclass
class Job:
    label: str  # what tables call it: a method name, maybe with a '+down' suffix
    cfg: RunConfig
    value: Any = None  # the sweep value, when part of a sweep


@dataclass
class RunRecord:
    job: Job
    rows: list[dict]
    initial: dict
    wall_s: float
    extra: dict = field(default_factory=dict)


def parse_label(label: str) -> tuple[str, dict[str, dict]]:
    """``ecolora+down`` -> (``ecolora``, overrides turning on sparse global deltas)."""
    name, plus, suffix = label.partition("+")
    if not plus:
        return name, {}
    if suffix == "down":
        return name, {"compress": {"compress_download": True}}
    raise ConfigError(f"unknown method suffix {'+' + suffix!r} in {label!r}; only '+down' "
                      "(compress.compress_download=true) exists")


def job_for(label: str, base: RunConfig, seed: int, value: Any = None,
            extra: dict | None = None) -> Job:
    """The job running ``label`` on ``base`` with ``seed`` (and sweep overrides ``extra``)."""
    name, over = parse_label(label)
    merged: dict[str, Any] = {"method": name, "fed": {"seed": seed}}
    for part in (extra or {}, over):
        for sec, values in part.items():
            merged.setdefault(sec, {}).update(values)
    return Job(label, merge(base, merged), value)


def _setup_key(cfg: RunConfig) -> str:
    d = cfg.to_dict()
    return json.dumps({k: d[k] for k in ("model", "data", "fed")}, sort_keys=True, default=str)


def run_jobs(jobs: Iterable[Job], on_round: Callable[[Job, dict], None] | None = None,
             on_start: Callable[[Job], None] | None = None) -> Iterator[RunRecord]:
    """Run ``jobs`` in order, reusing the built setup while model/data/fed knobs are unchanged.

    Every job's config is validated and its setup built before it runs; a bad input raises
    ``EcoloraError`` from ``build`` (one line at the CLI).
    """
    import torch

    from ecolora.methods import build_method
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import simulate
    from ecolora.train.model import get_params, set_params

    key, base, init, rng = None, None, None, None
    for job in jobs:
        if _setup_key(job.cfg) != key:
            base = None  # free the previous model before loading the next
            base = build(job.cfg)
            key, init, rng = _setup_key(job.cfg), get_params(base.model), torch.get_rng_state()
        setup = replace(base, cfg=job.cfg,
                        method=build_method(job.cfg.method, job.cfg.method_compress, base.layout))
        set_params(setup.model, init)
        torch.set_rng_state(rng)
        if on_start:
            on_start(job)
        start = time.perf_counter()
        out = simulate(setup, (lambda row, j=job: on_round(j, row)) if on_round else None)
        yield RunRecord(job, out["rounds"], out["initial"], time.perf_counter() - start,
                        {"lora_parameters": setup.layout.numel,
                         "client_sizes": [len(c) for c in setup.clients]})


def _run_one(job: Job, i: int, events) -> RunRecord:
    """Worker process: run one job, reporting its start and rounds to ``events``."""
    (rec,) = run_jobs([job], lambda j, row: events.put(("round", i, row)),
                      lambda j: events.put(("start", i, None)))
    return rec


def _with_thread_share(job: Job, share: int) -> Job:
    """Auto threads become a fixed share of the cores (``train.threads.core_share``); results
    do not depend on the count."""
    if job.cfg.model.threads:
        return job
    return replace(job, cfg=replace(job.cfg, model=replace(job.cfg.model, threads=share)))


def run_jobs_parallel(jobs: list[Job], workers: int,
                      on_round: Callable[[Job, dict], None] | None = None,
                      on_start: Callable[[Job], None] | None = None) -> list[RunRecord]:
    """``run_jobs`` over ``workers`` processes, one job per task; records in job order."""
    if workers <= 1 or len(jobs) <= 1:
        return list(run_jobs(jobs, on_round, on_start))
    ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
    workers = min(workers, len(jobs))
    share = core_share(workers)
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        events = manager.Queue()
        futures = [pool.submit(_run_one, _with_thread_share(job, share), i, events)
                   for i, job in enumerate(jobs)]

        def drain(block: bool) -> None:
            while True:
                try:
                    kind, i, row = events.get(timeout=0.2) if block else events.get_nowait()
                except queue.Empty:
                    return
                block = False
                if kind == "start" and on_start:
                    on_start(jobs[i])
                elif kind == "round" and on_round:
                    on_round(jobs[i], row)

        while not all(f.done() for f in futures):
            drain(block=True)
        drain(block=False)
        # f.result() re-raises a worker's error (an EcoloraError stays one line at the CLI)
        return [replace(f.result(), job=job) for f, job in zip(futures, jobs, strict=True)]
