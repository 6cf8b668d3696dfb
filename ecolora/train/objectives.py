"""Local training objectives: supervised fine-tuning and DPO (Rafailov et al., 2023).

Why here and not in the methods: a federated method only sees the parameter delta a client
produces, so every method works with every objective; the objective only decides the loss that
produces the delta.

DPO's reference model is the frozen base, i.e. the same peft model with its adapters disabled
(``model.disable_adapter()``): no second model copy in memory. Because the base never changes,
the reference log-probabilities of a pair are computed once and cached on the pair. Each pair is
scored alone (batch of its two sequences), so the cached value does not depend on which batch
first needed it: a resumed run gets bit-identical references. Evaluation batches are fixed, so
there the reference is scored in the eval batch itself (``batched=True``): with the adapters at
their zero init, policy and reference are then the same computation and every margin is exactly
0: the base model's pairs are clean ties (``eval_pref_ties`` = 1, accuracy 50%), not float noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ecolora.train.batches import IGNORE, Example, PairExample, collate, collate_pairs, to_device

OBJECTIVES = ("sft", "dpo")


def _device(model) -> torch.device:
    return next(model.parameters()).device


def token_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-position log p of the label, mask of scored positions), both (B, T-1), fp32."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    # cross_entropy over (B, V, T) never materialises a second (B, T, V) log-softmax tensor
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE,
                          reduction="none")
    return -nll, labels != IGNORE


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of response-token log-probabilities per row."""
    logps, _ = token_logps(model, batch)
    return logps.sum(-1)


@torch.no_grad()
def reference_logps(model, pairs: list[PairExample], pad_id: int,
                    batched: bool = False) -> torch.Tensor:
    """(B, 2) base-model log p(chosen), log p(rejected); cached on each pair.

    Each missing pair is scored alone, or with ``batched`` the whole list in one batch.
    """
    device = _device(model)
    missing = [p for p in pairs if p.ref_logps is None]
    if missing:
        groups = [pairs] if batched else [[p] for p in missing]
        was_training = model.training
        model.eval()
        try:
            with model.disable_adapter():
                for group in groups:
                    out = sequence_logps(model, to_device(collate_pairs(group, pad_id), device))
                    n = len(group)
                    for i, p in enumerate(group):
                        p.ref_logps = (float(out[i]), float(out[n + i]))
        finally:
            model.train(was_training)
    return torch.tensor([p.ref_logps for p in pairs], dtype=torch.float32, device=device)


@dataclass(frozen=True)
class Objective:
    """``loss`` for training; ``dpo_stats`` also gives the eval metrics of a pair batch."""

    name: str = "sft"
    beta: float = 0.1

    def loss(self, model, examples: list, pad_id: int) -> torch.Tensor:
        if self.name == "dpo":
            return self.dpo_stats(model, examples, pad_id)["loss"].mean()
        return sft_loss(model, examples, pad_id)

    def dpo_stats(self, model, pairs: list[PairExample], pad_id: int,
                  batched_reference: bool = False) -> dict[str, torch.Tensor]:
        """Per pair: DPO loss and implicit rewards beta * (log pi - log pi_ref)."""
        ref = reference_logps(model, pairs, pad_id, batched_reference)
        policy = sequence_logps(model, to_device(collate_pairs(pairs, pad_id), _device(model)))
        n = len(pairs)
        chosen = self.beta * (policy[:n] - ref[:, 0])
        rejected = self.beta * (policy[n:] - ref[:, 1])
        margin = chosen - rejected
        return {"loss": -F.logsigmoid(margin), "margin": margin, "chosen": chosen,
                "rejected": rejected}


def sft_loss(model, examples: list[Example], pad_id: int) -> torch.Tensor:
    """Token-mean cross-entropy on the response tokens (position t predicts token t+1)."""
    batch = to_device(collate(examples, pad_id), _device(model))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1),
                           batch["labels"][:, 1:].flatten(), ignore_index=IGNORE)


def make_objective(name: str = "sft", beta: float = 0.1) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}")
    return Objective(name, beta)
