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
from ecolora.errors import ConfigError, DataError

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


@dataclass(frozen=True)
class TokenBudget:
    """How ``max_len`` tokens are shared between a prompt and its answer(s).

    When prompt and answer fit, nothing is cut. Otherwise the prompt keeps its last ``prompt``
    tokens (0 = half of ``max_len``), or more when the answer leaves room, and the answers get
    the rest: the response always keeps its room, and no prompt shrinks to a token or two.
    An example whose prompt would keep fewer than ``min_prompt`` tokens (or none at all) is
    dropped and counted instead of being trained or scored on a prompt it cannot read.
    """

    max_len: int
    prompt: int = 0
    min_prompt: int = 1

    def __post_init__(self) -> None:
        if self.max_len < 2 or self.prompt < 0 or self.prompt >= self.max_len:
            raise ConfigError(f"the prompt budget must be in [0, {self.max_len - 1}] "
                              f"(below model.max_seq_len), got {self.prompt}")
        if not 1 <= self.min_prompt < self.max_len:
            raise ConfigError(f"the minimum prompt length must be in [1, {self.max_len - 1}], "
                              f"got {self.min_prompt}")

    @property
    def prompt_budget(self) -> int:
        return self.prompt or self.max_len // 2

    def fit(self, prompt: list[int], answers: list[list[int]]
            ) -> tuple[list[int], list[list[int]], bool] | None:
        """(prompt, answers, cut) fitted into ``max_len``; None when the example is dropped."""
        longest = max(len(a) for a in answers)
        if len(prompt) + longest <= self.max_len:
            cut, keep = False, len(prompt)
        else:
            keep = min(len(prompt), max(self.prompt_budget, self.max_len - longest))
            answers = [a[: self.max_len - keep] for a in answers]
            cut = True
        if keep < min(len(prompt), self.min_prompt) or keep == 0:
            return None
        return prompt[len(prompt) - keep:], answers, cut


@dataclass
class Tokenized:
    """Examples plus what fitting them into the budget did: how many were cut, how many dropped,
    and which records (their indices) survived, so callers can keep record metadata aligned."""

    examples: list = field(default_factory=list)
    truncated: int = 0
    dropped: int = 0
    kept: list[int] = field(default_factory=list)


def tokenize(records: list[dict], tokenizer, budget: TokenBudget,
             objective: str = "sft") -> Tokenized:
    """Records -> examples under ``budget``; prompts lose their left end first.

    ``objective="dpo"`` needs preference records (with ``rejected``) and gives ``PairExample``;
    ``"sft"`` trains on ``response`` (the chosen answer of a preference record). If every record
    is dropped that is a DataError: nothing could be trained or scored.
    """
    out = Tokenized()
    eos = tokenizer.eos_token_id
    if objective == "dpo" and records and any("rejected" not in r for r in records):
        raise ConfigError("fed.objective=dpo needs a preference dataset (prompt, chosen, "
                          "rejected); this one has no rejected answers")
    for i, r in enumerate(records):
        prompt = _prompt_ids(r, tokenizer)
        answers = [r["response"]] + ([r["rejected"]] if objective == "dpo" else [])
        ids = [tokenizer(a, add_special_tokens=False)["input_ids"] + [eos] for a in answers]
        fitted = budget.fit(prompt, ids)
        if fitted is None:
            out.dropped += 1
            continue
        prompt, ids, cut = fitted
        out.truncated += cut
        out.kept.append(i)
        if objective == "dpo":
            out.examples.append(PairExample(prompt, ids[0], ids[1], r["response"]))
        else:
            out.examples.append(Example(prompt + ids[0], len(prompt), r["response"]))
    if records and not out.examples:
        raise DataError(f"all {len(records)} examples would keep fewer than "
                        f"{budget.min_prompt} prompt token(s) at model.max_seq_len="
                        f"{budget.max_len}; raise model.max_seq_len or model.max_prompt_len, "
                        "or lower model.min_prompt_len")
    return out


def tokenize_records(records: list[dict], tokenizer, max_len: int,
                     objective: str = "sft") -> tuple[list, int]:
    """(examples, how many were truncated) under the default budget (half for the prompt)."""
    done = tokenize(records, tokenizer, TokenBudget(max_len), objective)
    return done.examples, done.truncated


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
