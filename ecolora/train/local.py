"""Local training of one client and evaluation of the global model (spec §7, client loop)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ecolora.train.batches import Example
from ecolora.train.evaluate import evaluate  # noqa: F401  (re-exported: runtimes import it here)
from ecolora.train.model import get_params, lora_parameters, set_params
from ecolora.train.objectives import Objective


def lr_at(step: int, total: int, base: float, schedule: str) -> float:
    """Client learning rate at global step ``step`` of ``total`` (spec §8 needs decay)."""
    if schedule == "constant":
        return base
    if schedule == "cosine":  # 1) cosine from base to 10% of base
        return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    if schedule == "inv_sqrt":  # 2) eta_t = base / sqrt(1 + t / E-sized unit), O(T^-1/2)
        return base / math.sqrt(1 + step / max(1, total // 10))
    raise ValueError(f"unknown lr schedule {schedule!r}")


@dataclass
class LocalResult:
    params: list[np.ndarray]
    loss: float


def train_local(
    model, start: list[np.ndarray], data: list[Example], steps: int, batch_size: int,
    lrs: list[float], weight_decay: float, pad_id: int, rng: np.random.Generator,
    trainable: list[bool] | None = None, objective: Objective | None = None,
) -> LocalResult:
    """E AdamW steps from the global adapters ``start``; fresh optimizer state each round.

    ``trainable`` (one flag per LoRA tensor, None = all) is the method's say in training:
    FFA-LoRA (Sun et al., ICLR 2024) keeps A frozen at its init. Frozen tensors get no gradient
    and no optimizer state for the steps, and are trainable again afterwards. ``objective``
    is SFT (default) or DPO (``data`` then holds preference pairs).
    """
    objective = objective or Objective()
    set_params(model, start)
    params = [p for _, p in lora_parameters(model)]
    flags = trainable if trainable is not None else [True] * len(params)
    frozen = [p for p, t in zip(params, flags, strict=True) if not t]
    opt = torch.optim.AdamW([p for p, t in zip(params, flags, strict=True) if t], lr=lrs[0],
                            weight_decay=weight_decay)
    losses = []
    model.train()
    for p in frozen:
        p.requires_grad_(False)
    try:
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lrs[step]
            take = rng.choice(len(data), size=batch_size, replace=len(data) < batch_size)
            loss = objective.loss(model, [data[i] for i in take], pad_id)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return LocalResult(get_params(model), float(np.mean(losses)))


def gradient_probe(model, data: list[Example], batch_size: int, pad_id: int,
                   objective: Objective | None = None) -> Callable[[], list[torch.Tensor]]:
    """One forward and backward pass on the first batch: [loss, *LoRA grads], no side effects.

    ``train.threads`` runs it once per candidate thread count to keep only counts that change
    no bit of the results. Torch's RNG and the examples' caches are left as they were.
    """
    objective = objective or Objective()
    batch = [copy.copy(e) for e in data[:batch_size]]  # DPO caches reference log-probs on pairs

    def probe() -> list[torch.Tensor]:
        params = [p for _, p in lora_parameters(model)]
        rng_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(0)
            loss = objective.loss(model, [copy.copy(e) for e in batch], pad_id)
            grads = torch.autograd.grad(loss, params)
        finally:
            torch.random.set_rng_state(rng_state)
        return [loss.detach(), *grads]

    return probe
