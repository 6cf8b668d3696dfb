"""Records -> token ids with the loss on the response only, and padded batches.

SFT records become ``Example`` (prompt + response + EOS); for DPO, preference records become
``PairExample`` (one prompt, the chosen and the rejected answer). Both keep the reference answer
text, which evaluation needs for answer extraction and the samples file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ecolora.data.prompt import has_chat_template, render_prompt
from ecolora.errors import ConfigError

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    n_prompt: int  # tokens before the response; the loss starts after them
    reference: str = ""  # the response text (answer extraction, samples)


@dataclass
class PairExample:
    prompt: list[int]
    chosen: list[int]  # response ids + EOS
    rejected: list[int]
    reference: str = ""  # the chosen response text
    ref_logps: tuple[float, float] | None = field(default=None, compare=False)  # DPO cache

    def sequences(self) -> tuple[Example, Example]:
        n = len(self.prompt)
        return Example(self.prompt + self.chosen, n), Example(self.prompt + self.rejected, n)


def _prompt_ids(record: dict, tokenizer) -> list[int]:
    text = render_prompt(record, tokenizer)
    # a chat template writes its own BOS; a plain prompt gets the tokenizer's special tokens
    return tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"]


def _fit(prompt: list[int], answers: list[list[int]], max_len: int) -> tuple[list, list, bool]:
    """Cut answers to max_len - 1 and the prompt from its left end so the longest pair fits."""
    longest = max(len(a) for a in answers)
    if len(prompt) + longest <= max_len:
        return prompt, answers, False
    answers = [a[: max_len - 1] for a in answers]
    keep = max_len - max(len(a) for a in answers)
    return prompt[-keep:], answers, True


def tokenize_records(records: list[dict], tokenizer, max_len: int,
                     objective: str = "sft") -> tuple[list, int]:
    """(examples, how many were truncated). Prompts lose their left end first.

    ``objective="dpo"`` needs preference records (with ``rejected``) and gives ``PairExample``;
    ``"sft"`` trains on ``response`` (the chosen answer of a preference record).
    """
    out: list = []
    truncated = 0
    eos = tokenizer.eos_token_id
    if objective == "dpo" and records and any("rejected" not in r for r in records):
        raise ConfigError("fed.objective=dpo needs a preference dataset (prompt, chosen, "
                          "rejected); this one has no rejected answers")
    for r in records:
        prompt = _prompt_ids(r, tokenizer)
        answers = [r["response"]] + ([r["rejected"]] if objective == "dpo" else [])
        ids = [tokenizer(a, add_special_tokens=False)["input_ids"] + [eos] for a in answers]
        prompt, ids, cut = _fit(prompt, ids, max_len)
        truncated += cut
        if objective == "dpo":
            out.append(PairExample(prompt, ids[0], ids[1], r["response"]))
        else:
            out.append(Example(prompt + ids[0], len(prompt), r["response"]))
    return out, truncated


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = np.full((len(examples), width), pad_id, dtype=np.int64)
    labels = np.full((len(examples), width), IGNORE, dtype=np.int64)
    mask = np.zeros((len(examples), width), dtype=np.int64)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = e.input_ids
        mask[i, :n] = 1
        labels[i, e.n_prompt : n] = e.input_ids[e.n_prompt :]
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels)}


def collate_pairs(pairs: list[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch of 2B rows: the B chosen sequences, then the B rejected ones."""
    seqs = [p.sequences() for p in pairs]
    return collate([c for c, _ in seqs] + [r for _, r in seqs], pad_id)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
