"""Torch intra-op threads for local training: a fixed count, or the fastest one by measurement.

Why measured: on small models extra threads help or hurt depending on what else the machine
runs. On the embedded base (1.3M parameters, batches of 8 x ~41 tokens, a 2-core AMD EPYC) a
client round of 5 steps took 0.57 s with one thread and 0.42 s with two on an idle machine,
but 1.87 s with two while another process kept one core busy: OpenMP's spinning barrier waits
for the descheduled thread. No static rule gets both cases right, so ``model.threads=0`` times
every local round (seconds per step) and keeps the thread count that is fastest under the load
of the moment, trying the others again from time to time with exponential back-off.

The choice never changes results: a candidate is kept only when one forward and backward pass
on a training batch gives bit-identical loss and gradients with it and with one thread
(``bitwise_candidates``); BLAS libraries that split reductions across threads fail that check
and the run stays on one thread. Large models (>= ``SMALL_MODEL`` parameters) use every core.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

SMALL_MODEL = 50_000_000
FIRST_WAIT = 4  # calls before a losing count is tried again; doubles on every loss ...
MAX_WAIT = 64  # ... up to this many


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def core_share(processes: int, cores: int | None = None) -> int:
    """Threads for each of ``processes`` processes that share this machine's cores. A fixed
    share, not timing: processes timing counts against each other each see the others' load."""
    return max(1, (cores or usable_cores()) // max(1, processes))


def candidate_counts(cores: int) -> list[int]:
    """1, 2, 4, ... and ``cores`` itself: the counts worth timing on this machine."""
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [max(1, cores)]


class ThreadTuner:
    """Picks torch's thread count for each timed call; see the module docstring for why.

    ``choose`` explores every candidate once, then uses the one whose latest measurement is the
    lowest; a candidate that lost is re-timed after FIRST_WAIT calls, then 2x, 4x, ... later,
    so a machine whose load changes is followed at a bounded cost.
    """

    def __init__(self, candidates: list[int], clock: Callable[[], float] = time.perf_counter,
                 set_threads: Callable[[int], None] = torch.set_num_threads) -> None:
        if not candidates or min(candidates) < 1:
            raise ValueError(f"thread candidates must be >= 1, got {candidates}")
        self.candidates = sorted(set(candidates))
        self.latest: dict[int, float] = {}  # seconds per step, last time each count ran
        self.wait = dict.fromkeys(self.candidates, FIRST_WAIT)
        self.due = dict.fromkeys(self.candidates, 0)
        self.calls = 0
        self._clock, self._set = clock, set_threads

    def best(self) -> int:
        """The fastest count measured so far (the first candidate before any measurement)."""
        if not self.latest:
            return self.candidates[0]
        return min(self.latest, key=lambda n: (self.latest[n], n))

    def choose(self) -> int:
        for n in self.candidates:
            if n not in self.latest:
                return n
        best = self.best()
        due = [n for n in self.candidates if n != best and self.calls >= self.due[n]]
        return due[0] if due else best

    def record(self, threads: int, seconds_per_step: float) -> None:
        before = self.best() if self.latest else None
        retimed_loser = threads in self.latest and threads != before
        self.latest[threads] = seconds_per_step
        self.calls += 1
        after = self.best()
        if threads == after:
            self.wait[threads] = FIRST_WAIT
        elif retimed_loser:  # lost again: wait twice as long before the next try
            self.wait[threads] = min(MAX_WAIT, self.wait[threads] * 2)
        for n in {threads, before} - {None, after}:  # the losers of this call
            self.due[n] = self.calls + self.wait[n]

    def use_best(self) -> int:
        """Set (and return) the fastest count, e.g. for evaluation."""
        n = self.best()
        self._set(n)
        return n

    def report(self) -> dict:
        """For summary.json: the candidates, the final choice and each one's latest timing."""
        return {"candidates": self.candidates, "chosen": self.best(),
                "seconds_per_step": {str(n): round(v, 5) for n, v in sorted(self.latest.items())}}

    @contextmanager
    def timed(self, steps: int) -> Iterator[int]:
        """Run the body with the chosen count and record its seconds per step."""
        n = self.choose()
        self._set(n)
        t0 = self._clock()
        yield n
        self.record(n, (self._clock() - t0) / max(1, steps))


def bitwise_candidates(candidates: list[int], probe: Callable[[], list[torch.Tensor]]) -> list[int]:
    """The candidates whose ``probe`` outputs equal the one-thread outputs bit for bit."""
    def run(n: int) -> list[torch.Tensor]:
        torch.set_num_threads(n)
        return [t.detach().clone() for t in probe()]

    reference = run(1)
    kept = [1]
    for n in candidates:
        if n != 1 and all(torch.equal(a, b) for a, b in zip(reference, run(n), strict=True)):
            kept.append(n)
    torch.set_num_threads(1)
    return kept


def thread_policy(model, threads: int, probe: Callable[[], list[torch.Tensor]] | None = None,
                  cores: int | None = None) -> ThreadTuner:
    """The tuner for ``model.threads``: fixed when > 0; else every core for a large model (or
    one thread on a GPU), else the bit-identical counts of ``probe``, chosen by timing."""
    cores = cores or usable_cores()
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL
    on_cpu = next(model.parameters()).device.type == "cpu"
    if threads > 0:
        candidates = [threads]
    elif not small:
        candidates = [cores]
    elif not on_cpu or probe is None:
        candidates = [1]
    else:
        candidates = bitwise_candidates(candidate_counts(cores), probe)
    tuner = ThreadTuner(candidates)
    tuner.use_best()
    return tuner
