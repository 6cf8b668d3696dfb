"""Thread tuning: the policy follows measured speed, and no thread count changes a result."""

from __future__ import annotations

import json

import pytest
import torch

from ecolora.config import RunConfig, merge
from ecolora.runtime.setup import build
from ecolora.train.local import gradient_probe
from ecolora.train.threads import (
    FIRST_WAIT,
    MAX_WAIT,
    ThreadTuner,
    bitwise_candidates,
    candidate_counts,
    thread_policy,
)


class FakeMachine:
    """A clock whose per-step cost depends on the thread count and on a settable load."""

    def __init__(self, cost: dict[int, float]) -> None:
        self.cost, self.now, self.threads, self.log = dict(cost), 0.0, 1, []

    def clock(self) -> float:
        return self.now

    def set_threads(self, n: int) -> None:
        self.threads = n

    def step(self, tuner: ThreadTuner) -> int:
        with tuner.timed(5) as n:
            self.now += 5 * self.cost[n]
        self.log.append(n)
        return n


def _tuner(machine: FakeMachine, candidates=(1, 2)) -> ThreadTuner:
    return ThreadTuner(list(candidates), clock=machine.clock, set_threads=machine.set_threads)


def test_candidate_counts_are_powers_of_two_and_all_cores():
    assert candidate_counts(1) == [1]
    assert candidate_counts(2) == [1, 2]
    assert candidate_counts(6) == [1, 2, 4, 6]
    assert candidate_counts(8) == [1, 2, 4, 8]


def test_tuner_explores_then_keeps_the_fastest_and_sets_it():
    machine = FakeMachine({1: 0.11, 2: 0.08})
    tuner = _tuner(machine)
    picks = [machine.step(tuner) for _ in range(12)]
    assert picks[:2] == [1, 2]  # each count timed once
    assert picks.count(2) >= 9  # then two threads, with a rare re-check of one
    assert machine.threads in (1, 2) and tuner.best() == 2
    assert tuner.use_best() == 2 and machine.threads == 2
    report = tuner.report()
    assert report["chosen"] == 2 and report["seconds_per_step"] == {"1": 0.11, "2": 0.08}


def test_tuner_leaves_a_count_that_becomes_slow_under_load_and_backs_off():
    machine = FakeMachine({1: 0.11, 2: 0.08})
    tuner = _tuner(machine)
    for _ in range(5):  # 1, 2, then two threads until one thread is due for a re-check
        machine.step(tuner)
    machine.cost[2] = 0.37  # another process takes a core: the spinning barrier waits
    assert machine.step(tuner) == 2  # this call is measured slow ...
    after = [machine.step(tuner) for _ in range(200)]
    assert after[0] == 1  # ... and the next one moves to one thread
    retries = [i for i, n in enumerate(after) if n == 2]
    gaps = [b - a for a, b in zip(retries, retries[1:], strict=False)]
    assert gaps == sorted(gaps) and max(gaps) <= MAX_WAIT + 1  # exponential back-off, capped
    assert len(retries) <= 8  # at most a handful of slow probes in 200 rounds
    machine.cost[2] = 0.08  # the load goes away: the next probe wins and two threads return
    for _ in range(MAX_WAIT + 2):
        machine.step(tuner)
    assert tuner.best() == 2 and machine.log[-1] == 2


def test_a_losing_count_is_retried_first_after_first_wait_calls():
    machine = FakeMachine({1: 0.1, 2: 0.2})
    tuner = _tuner(machine)
    picks = [machine.step(tuner) for _ in range(2 + FIRST_WAIT + 1)]
    assert picks[:2] == [1, 2] and picks[2:-1] == [1] * FIRST_WAIT and picks[-1] == 2


def test_fixed_count_never_changes():
    machine = FakeMachine({3: 0.5})
    tuner = _tuner(machine, candidates=[3])
    assert {machine.step(tuner) for _ in range(10)} == {3}


def test_bitwise_check_drops_counts_that_change_results():
    def probe():  # pretend 4 threads split a reduction and round differently
        n = torch.get_num_threads()
        return [torch.tensor([1.0, 2.0 + (1e-6 if n == 4 else 0.0)])]

    assert bitwise_candidates([1, 2, 4], probe) == [1, 2]


def test_policy_follows_the_knob():
    model = torch.nn.Linear(4, 4)
    probe = lambda: [torch.ones(1)]  # noqa: E731
    assert thread_policy(model, 3, probe, cores=8).candidates == [3]
    assert thread_policy(model, 0, probe, cores=4).candidates == [1, 2, 4]
    assert thread_policy(model, 0, None, cores=4).candidates == [1]  # unverifiable: one thread
    assert thread_policy(model, 0, probe, cores=1).candidates == [1]


@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_gradient_probe_is_bitwise_across_threads_and_has_no_side_effects(objective, tmp_path):
    """The real probe on the embedded model: 1 and 2 threads agree, torch's RNG is untouched."""
    data: dict = {"train_examples": 64, "eval_examples": 8}
    if objective == "dpo":
        prefs = tmp_path / "prefs.jsonl"
        prefs.write_text("".join(json.dumps({"prompt": f"Is {i} even?", "chosen": "yes",
                                             "rejected": "no"}) + "\n" for i in range(16)))
        data["dataset"] = str(prefs)
    setup = build(merge(RunConfig(), {"data": data, "model": {"threads": 1},
                                      "fed": {"clients": 2, "objective": objective}}))
    probe = gradient_probe(setup.model, setup.clients[0], 4, setup.tokenizer.pad_token_id,
                           setup.objective)
    state = torch.random.get_rng_state()
    first = probe()
    assert len(first) == 1 + len(setup.layout.tensors) and float(first[0]) > 0
    assert bitwise_candidates([1, 2], probe) == [1, 2]
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(p.grad is None for p in setup.model.parameters())
    if objective == "dpo":
        assert all(e.ref_logps is None for e in setup.clients[0])  # the cache stays empty


def test_parallel_workers_get_a_fixed_share_instead_of_timing_each_other():
    from ecolora.runtime.batch import Job
    from ecolora.runtime.batch import _with_thread_share as _threads_at_most

    auto = Job("ecolora", RunConfig())
    assert _threads_at_most(auto, 1).cfg.model.threads == 1
    assert auto.cfg.model.threads == 0  # the job (and its recorded config) is not changed
    fixed = Job("ecolora", merge(RunConfig(), {"model": {"threads": 3}}))
    assert _threads_at_most(fixed, 1).cfg.model.threads == 3
