"""Local training of one client and evaluation of the global model (spec §7, client loop)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ecolora.train.batches import IGNORE, Example, collate
from ecolora.train.model import get_params, lora_parameters, set_params


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


def _loss(model, batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # (B, T, V): position t predicts token t+1
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                           ignore_index=IGNORE)


def train_local(
    model, start: list[np.ndarray], data: list[Example], steps: int, batch_size: int,
    lrs: list[float], weight_decay: float, pad_id: int, rng: np.random.Generator,
    trainable: list[bool] | None = None,
) -> LocalResult:
    """E AdamW steps from the global adapters ``start``; fresh optimizer state each round.

    ``trainable`` (one flag per LoRA tensor, None = all) is the method's say in training:
    FFA-LoRA (Sun et al., ICLR 2024) keeps A frozen at its init. Frozen tensors get no gradient
    and no optimizer state for the steps, and are trainable again afterwards.
    """
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
            loss = _loss(model, collate([data[i] for i in take], pad_id))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return LocalResult(get_params(model), float(np.mean(losses)))


@torch.no_grad()
def evaluate(model, params: list[np.ndarray], data: list[Example], pad_id: int,
             batch_size: int = 64) -> dict[str, float]:
    """Token-mean loss on responses and greedy exact match.

    Exact match is computed by teacher forcing: greedy decoding emits exactly response+EOS iff
    the argmax at every response position equals the target token, so one forward pass per
    batch gives the same answer as generating, at a fraction of the cost.
    """
    set_params(model, params)
    model.eval()
    total_loss, total_tokens, correct = 0.0, 0, 0
    for i in range(0, len(data), batch_size):
        batch = collate(data[i : i + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE
        total_loss += F.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                      ignore_index=IGNORE, reduction="sum").item()
        total_tokens += int(mask.sum())
        hit = (logits.argmax(-1) == labels) | ~mask
        correct += int(hit.all(dim=1).sum())
    model.train()
    return {"eval_loss": total_loss / max(1, total_tokens), "eval_accuracy": correct / len(data)}
