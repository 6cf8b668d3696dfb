"""Evaluation of the global adapters: loss, perplexity, exact match or preference metrics.

SFT: token-mean loss on responses, its perplexity, and exact match under an answer-extraction
rule. With ``extract="exact"`` the whole response must come out, which teacher forcing decides
in one forward pass (greedy decoding emits exactly response+EOS iff the argmax at every response
position is the target token); any other rule (GSM8K's ``####``, the last number) needs the
generated text, so those decode greedily. DPO: the mean DPO loss and, from the implicit rewards
``beta * (log pi - log pi_ref)``, preference accuracy (chosen scored above rejected) and mean
reward margin, with ties (margin exactly 0) as half a win and their share reported apart
(``eval_pref_ties``). ``eval_accuracy`` is always the objective's headline accuracy (exact match for
SFT, preference accuracy for DPO), so summaries and plots need no special case.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F

from ecolora.train.batches import IGNORE, Example, PairExample, collate, to_device
from ecolora.train.metrics import Metric, score
from ecolora.train.model import set_params
from ecolora.train.objectives import Objective

EXTRACTORS = ("exact", "gsm8k", "last_number")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(text: str, rule: str) -> str | None:
    """The part of ``text`` that is compared; None when the rule finds nothing."""
    if rule == "exact":
        return text.strip()
    if rule == "gsm8k":
        if "####" not in text:
            return None
        return _normalize_number(text.rsplit("####", 1)[1])
    if rule == "last_number":
        found = _NUMBER.findall(text)
        return _normalize_number(found[-1]) if found else None
    raise ValueError(f"unknown answer extraction {rule!r}")


def _normalize_number(text: str) -> str:
    """'1,234.' -> '1234': GSM8K answers are compared as written numbers, not strings."""
    return text.strip().replace(",", "").rstrip(".").strip()


def resolve_extract(rule: str, references: list[str]) -> str:
    """'auto' is gsm8k when the references carry GSM8K's '####' final answers, else exact."""
    if rule != "auto":
        return rule
    return "gsm8k" if references and any("####" in r for r in references) else "exact"


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate(model, params: list[np.ndarray], data: list, pad_id: int, batch_size: int = 64,
             *, objective: Objective | None = None, tokenizer=None, extract: str = "exact",
             max_new_tokens: int = 64, text_metrics: dict[str, Metric] | None = None
             ) -> dict[str, float]:
    """Metrics of ``params`` on ``data`` (Examples for SFT, PairExamples for DPO).

    ``text_metrics`` (``train.metrics``) score greedy generations against the references and
    add ``eval_<name>`` columns; generation runs only when they or answer extraction need it.
    """
    set_params(model, params)
    model.eval()
    try:
        pairs = bool(data) and isinstance(data[0], PairExample)
        if pairs:
            metrics = _evaluate_pairs(model, data, pad_id, objective or Objective("dpo"),
                                      batch_size)
        else:
            metrics = _evaluate_sft(model, data, pad_id, batch_size)
        if data and (text_metrics or (extract != "exact" and not pairs)):
            if tokenizer is None:
                raise ValueError("generated-text metrics need the tokenizer")
            texts = generate(model, tokenizer, [_prompt(e) for e in data], max_new_tokens,
                             batch_size)
            if extract != "exact" and not pairs:
                hits = [_match(t, e.reference, extract) for t, e in zip(texts, data, strict=True)]
                metrics["eval_accuracy"] = float(np.mean(hits)) if hits else 0.0
            metrics.update(score(text_metrics or {}, texts, [e.reference for e in data]))
        return metrics
    finally:
        model.train()


def _prompt(example: Example | PairExample) -> list[int]:
    return example.prompt if isinstance(example, PairExample) else \
        example.input_ids[: example.n_prompt]


def _match(generated: str, reference: str, rule: str) -> bool:
    want = extract_answer(reference, rule)
    return want is not None and extract_answer(generated, rule) == want


def _evaluate_sft(model, data: list[Example], pad_id: int, batch_size: int) -> dict[str, float]:
    device = _device(model)
    total_loss, total_tokens, correct = 0.0, 0, 0
    for i in range(0, len(data), batch_size):
        batch = to_device(collate(data[i : i + batch_size], pad_id), device)
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE
        total_loss += F.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                      ignore_index=IGNORE, reduction="sum").item()
        total_tokens += int(mask.sum())
        hit = (logits.argmax(-1) == labels) | ~mask
        correct += int(hit.all(dim=1).sum())
    loss = total_loss / max(1, total_tokens)
    return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0)),
            "eval_accuracy": correct / max(1, len(data))}


def _evaluate_pairs(model, data: list[PairExample], pad_id: int, objective: Objective,
                    batch_size: int) -> dict[str, float]:
    losses, margins, chosen, rejected = [], [], [], []
    for i in range(0, len(data), batch_size):
        stats = objective.dpo_stats(model, data[i : i + batch_size], pad_id,
                                    batched_reference=True)
        losses += stats["loss"].tolist()
        margins += stats["margin"].tolist()
        chosen += stats["chosen"].tolist()
        rejected += stats["rejected"].tolist()
    wins, ties, accuracy = preference_accuracy(margins)
    return {"eval_loss": float(np.mean(losses)), "eval_accuracy": accuracy,
            "eval_pref_accuracy": accuracy, "eval_pref_wins": wins, "eval_pref_ties": ties,
            "eval_reward_margin": float(np.mean(margins)),
            "eval_reward_chosen": float(np.mean(chosen)),
            "eval_reward_rejected": float(np.mean(rejected))}


def preference_accuracy(margins: list[float]) -> tuple[float, float, float]:
    """(share of wins, share of exact ties, accuracy with a tie counted as half a win).

    A tie (margin exactly 0: the base model, whose policy is its own reference) says nothing
    about which answer the model prefers, so it is neither a win nor a loss: counting it as a
    loss would print the base at 0%, as if it always preferred the rejected answer. Half credit
    puts the indifferent base at 50%, the chance level, and the tie share is reported apart.
    """
    if not margins:
        return 0.0, 0.0, 0.0
    m = np.asarray(margins, dtype=np.float64)
    wins, ties = float(np.mean(m > 0)), float(np.mean(m == 0))
    return wins, ties, wins + 0.5 * ties


def _max_positions(model) -> int | None:
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int,
             batch_size: int = 16) -> list[str]:
    """Greedy continuations of token-id prompts (left-padded batches), decoded to text.

    Generation stops at EOS and never runs past the model's position limit (GPT-2 style
    learned positions would index out of range).
    """
    from transformers import GenerationConfig

    device, pad, eos = _device(model), tokenizer.pad_token_id, tokenizer.eos_token_id
    limit = _max_positions(model)
    out: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            width = max(len(p) for p in chunk)
            new = max_new_tokens if limit is None else min(max_new_tokens, limit - width)
            if new < 1:
                out += [""] * len(chunk)
                continue
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, p in enumerate(chunk):
                ids[j, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                mask[j, width - len(p) :] = 1
            gen = GenerationConfig(max_new_tokens=new, do_sample=False, pad_token_id=pad,
                                   eos_token_id=eos)
            seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  generation_config=gen)
            for row in seqs[:, width:].tolist():
                if eos in row:
                    row = row[: row.index(eos)]
                out.append(tokenizer.decode(row, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return out


def generate_samples(model, params: list[np.ndarray], data: list, tokenizer, n: int,
                     max_new_tokens: int, extract: str = "exact") -> list[dict]:
    """The first ``n`` eval prompts with the model's greedy answer next to the reference."""
    if n <= 0 or not data:
        return []
    set_params(model, params)
    chosen = data[:n]
    prompts = [_prompt(e) for e in chosen]
    texts = generate(model, tokenizer, prompts, max_new_tokens)
    rows = []
    for e, p, text in zip(chosen, prompts, texts, strict=True):
        row = {"prompt": tokenizer.decode(p, skip_special_tokens=True), "reference": e.reference,
               "generated": text}
        if not isinstance(e, PairExample):
            row["correct"] = _match(text, e.reference, extract)
        rows.append(row)
    return rows
