"""Records -> token ids with the loss on the response only, and padded batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ecolora.data.prompt import format_prompt

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    n_prompt: int  # tokens before the response; the loss starts after them


def tokenize_records(records: list[dict], tokenizer, max_len: int) -> tuple[list[Example], int]:
    """(examples, how many were truncated). Prompts lose their left end first."""
    out, truncated = [], 0
    eos = tokenizer.eos_token_id
    for r in records:
        prompt = tokenizer(format_prompt(r["instruction"], r.get("context", "")))["input_ids"]
        resp = tokenizer(r["response"], add_special_tokens=False)["input_ids"] + [eos]
        if len(prompt) + len(resp) > max_len:
            truncated += 1
            resp = resp[: max_len - 1]
            prompt = prompt[-(max_len - len(resp)) :]
        out.append(Example(prompt + resp, len(prompt)))
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
