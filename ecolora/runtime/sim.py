"""In-process simulation: K seeded clients share one base model in memory (spec §7 loop).

The round logic (sampling, downloads, aggregation, evaluation, rows, checkpoints) is
``runtime/driver.py``'s; this runtime only delivers a round by calling ``client_round`` for each
sampled client in turn, handing the server-held residual and local tensors to it and back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ecolora.runtime.checkpoint import SimState
from ecolora.runtime.driver import ClientReply, Delivery, RoundDriver, RoundPlan, sample_clients
from ecolora.runtime.evaluation import evaluate_client, mean_metrics
from ecolora.runtime.rounds import client_round
from ecolora.runtime.setup import RunSetup

__all__ = ["evaluate_clients", "sample_clients", "simulate"]


def evaluate_clients(setup: RunSetup, params: list[np.ndarray],
                     local: dict[int, list[np.ndarray] | None]) -> dict[str, float]:
    """Personalized methods: every client's own model on the common eval set, then the mean."""
    return mean_metrics([evaluate_client(setup, params, local.get(k))
                         for k in range(setup.cfg.fed.clients)])


def simulate(setup: RunSetup, on_round: Callable[[dict], None] | None = None,
             resume: SimState | None = None,
             on_checkpoint: Callable[[SimState], None] | None = None) -> dict:
    """Run every round; returns {"rounds": [...], "initial": {...}, "params": final global}.

    ``on_round`` sees each row (a dict, as written to ``metrics.jsonl``) after its round;
    ``resume`` continues from a checkpoint's state; ``on_checkpoint`` sees the state after every
    round (runtime/checkpoint.py decides when to save it).
    """
    driver = RoundDriver(setup, resume)

    def deliver(plan: RoundPlan) -> Delivery:
        replies = []
        for k in plan.clients:
            residual, local, last = driver.client_state(k)
            res = client_round(setup, driver.params, k, plan.round, residual, local, last)
            replies.append(ClientReply(k, res.upload.payload, res.loss, res.upload.nonzeros,
                                       res.compute_s, (res.upload.residual, res.local)))
        return Delivery(replies)

    def personal_eval(params: list[np.ndarray]) -> dict[str, float]:
        return evaluate_clients(setup, params, driver.state.local)

    return driver.run(deliver, personal_eval, on_round, on_checkpoint)
