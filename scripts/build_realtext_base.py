"""Build the real-text benchmark base: a byte-level BPE tokenizer and a small pretrained Llama.

Why: the embedded base is a character-level model of a generated task; benchmarks on real
instructions (Dolly, HH-RLHF) need a model that has seen real English, yet stays cheap enough
that a federated run on 2 CPU cores finishes in minutes. This script trains one from the shared
data, deterministically (fixed seeds, CPU, 2 torch threads), and writes
``ecolora/assets/realtext_base/`` (``model.name = "realtext"``).

Data split (fine-tuning and DPO evaluation data never enter pretraining):

* PRETRAIN: Dolly categories ``open_qa``, ``general_qa``, ``brainstorming``,
  ``creative_writing`` (instruction, context and response as plain paragraphs, never the
  ``Q: ...\\nA: `` prompt format) and HH-RLHF harmless-test records 0..1199 (``chosen``).
  A seeded 3% of these documents is held out for a held-out perplexity.
* FINE-TUNING: Dolly ``closed_qa``, ``classification``, ``information_extraction``,
  ``summarization`` (``data.categories``); DPO: HH records 1200..2311 (``data.records=1200:``).

Usage::

    python scripts/build_realtext_base.py                      # defaults = the shipped asset
    python scripts/build_realtext_base.py --steps 20 --out /tmp/rt   # quick try
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ecolora.train.model import REALTEXT_BASE_DIR  # noqa: E402

PAD, EOS = "<pad>", "<eos>"
PRETRAIN_CATEGORIES = ("open_qa", "general_qa", "brainstorming", "creative_writing")
FINETUNE_CATEGORIES = ("closed_qa", "classification", "information_extraction", "summarization")
HH_PRETRAIN = 1200  # HH records [0, 1200) pretrain; [1200, end) are the DPO split
DOLLY_FILE, HH_FILE = "dolly-15k.jsonl", "hh-rlhf-harmless-base-test.jsonl"
SAMPLE_PROMPTS = (
    "The best way to learn a new language is",
    "Here are some ideas for a birthday party:",
    "The capital of France is",
    "Human: How do I make a cup of tea?\n\nAssistant:",
)


def default_data_dir() -> Path:
    env = os.environ.get("ECOLORA_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def dolly_text(rec: dict) -> str:
    """A Dolly record as plain paragraphs: instruction, context (if any), response."""
    parts = (rec["instruction"], rec.get("context", ""), rec["response"])
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def hh_text(rec: dict) -> str:
    """The chosen HH transcript, without its leading blank lines."""
    return rec["chosen"].strip()


def split_data(data_dir: Path, seed: int, holdout: float) -> dict[str, list[str]]:
    """Documents per split: pretrain train/held-out, fine-tuning categories, HH DPO split."""
    dolly, hh = _jsonl(data_dir / DOLLY_FILE), _jsonl(data_dir / HH_FILE)
    pre = [dolly_text(r) for r in dolly if r["category"] in PRETRAIN_CATEGORIES]
    pre += [hh_text(r) for r in hh[:HH_PRETRAIN]]
    rng = random.Random(seed)
    rng.shuffle(pre)
    n_val = max(1, int(len(pre) * holdout))
    fine = [dolly_text(r) for r in dolly if r["category"] in FINETUNE_CATEGORIES]
    dpo = [hh_text(r) for r in hh[HH_PRETRAIN:]]
    rng.shuffle(fine)
    rng.shuffle(dpo)
    return {"train": pre[n_val:], "heldout": pre[:n_val], "finetune": fine, "dpo": dpo}


def build_tokenizer(texts: list[str], vocab_size: int, max_len: int):
    """Byte-level BPE trained on the pretraining text only; no BOS, EOS added by the caller."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   model_max_length=max_len, clean_up_tokenization_spaces=False,
                                   padding_side="right")


def encode_docs(tokenizer, docs: list[str]) -> list[list[int]]:
    """Each document's ids followed by EOS (documents are separated by EOS when packed)."""
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    return [x + [tokenizer.eos_token_id] for x in ids]


def pack(docs: list[list[int]], seq: int) -> torch.Tensor:
    """Concatenate and cut into rows of ``seq`` tokens (the tail that does not fill one drops)."""
    flat = [t for d in docs for t in d]
    n = len(flat) // seq
    return torch.tensor(flat[: n * seq], dtype=torch.long).view(n, seq)


def make_config(vocab: int, args: argparse.Namespace):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.inter,
        num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64, max_position_embeddings=args.max_pos,
        rms_norm_eps=1e-5, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
        bos_token_id=1, rope_theta=10000.0, attention_dropout=0.0, initializer_range=0.02,
    )


@torch.no_grad()
def perplexity(model, docs: list[list[int]], max_len: int, batch: int = 16) -> float:
    """Token-level perplexity over whole documents (each cut to ``max_len``), EOS included."""
    model.eval()
    total, count = 0.0, 0
    docs = sorted((d[:max_len] for d in docs if len(d) > 1), key=len)
    for i in range(0, len(docs), batch):
        chunk = docs[i: i + batch]
        width = max(len(d) for d in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for j, d in enumerate(chunk):
            ids[j, : len(d)] = torch.tensor(d)
            labels[j, : len(d)] = torch.tensor(d)
        logits = model(input_ids=ids, attention_mask=(labels != -100).long()).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
            ignore_index=-100, reduction="sum")
        total += loss.item()
        count += int((labels[:, 1:] != -100).sum())
    model.train()
    return math.exp(total / max(1, count))


@torch.no_grad()
def greedy_samples(model, tokenizer, new_tokens: int) -> list[dict[str, str]]:
    model.eval()
    out = []
    for prompt in SAMPLE_PROMPTS:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        gen = model.generate(ids, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
        out.append({"prompt": prompt, "completion": text})
    model.train()
    return out


def train(model, rows: torch.Tensor, args: argparse.Namespace) -> tuple[float, int]:
    """AdamW, linear warm-up then cosine to 10%, seeded row shuffles -> (loss EMA, epochs)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    gen = torch.Generator().manual_seed(args.seed)
    order, pos, epochs = torch.randperm(len(rows), generator=gen), 0, 1
    ema, t0 = None, time.time()
    model.train()
    for step in range(args.steps):
        if pos + args.batch > len(order):
            order, pos, epochs = torch.randperm(len(rows), generator=gen), 0, epochs + 1
        ids = rows[order[pos: pos + args.batch]]
        pos += args.batch
        t = max(0.0, (step - warmup) / max(1, args.steps - warmup))
        lr = args.lr * ((step + 1) / warmup if step < warmup
                        else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {ema:.4f}  lr {lr:.2e}  {time.time() - t0:6.0f}s",
                  flush=True)
    return ema or 0.0, epochs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="folder with dolly-15k.jsonl and hh-rlhf-harmless-base-test.jsonl "
                         "(default: $ECOLORA_SHARED_DATA, else <repo>/../shared/data)")
    ap.add_argument("--out", type=Path, default=REALTEXT_BASE_DIR)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16, help="packed rows per step")
    ap.add_argument("--seq", type=int, default=256, help="packed row length in tokens")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=192, help="a multiple of 64 (head dim 64)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--inter", type=int, default=512)
    ap.add_argument("--max-pos", type=int, default=512)
    ap.add_argument("--holdout", type=float, default=0.03)
    ap.add_argument("--eval-docs", type=int, default=300,
                    help="documents per perplexity set (held-out, fine-tuning, DPO split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    args.data_dir = args.data_dir or default_data_dir()
    if args.hidden % 64:
        ap.error("--hidden must be a multiple of 64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # long documents are packed, not fed whole: no warning
    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    for name in (DOLLY_FILE, HH_FILE):
        if not (args.data_dir / name).is_file():
            print(f"error: {args.data_dir / name} not found (set --data-dir)", file=sys.stderr)
            return 2
    split = split_data(args.data_dir, args.seed, args.holdout)
    tokenizer = build_tokenizer(split["train"], args.vocab, args.max_pos)
    train_docs = encode_docs(tokenizer, split["train"])
    rows = pack(train_docs, args.seq)
    n_train_tokens = int(rows.numel())
    evals = {k: encode_docs(tokenizer, split[k][: args.eval_docs])
             for k in ("heldout", "finetune", "dpo")}
    print(f"docs: {len(split['train'])} train, {len(split['heldout'])} held out; "
          f"{n_train_tokens:,} train tokens in {len(rows)} rows", flush=True)

    model = LlamaForCausalLM(make_config(len(tokenizer), args))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params:,}  vocab: {len(tokenizer)}", flush=True)
    t_train = time.time()
    loss_ema, epochs = train(model, rows, args)
    train_s = time.time() - t_train

    ppl = {k: round(perplexity(model, v, args.max_pos), 2) for k, v in evals.items()}
    samples = greedy_samples(model, tokenizer, 40)
    print("perplexity:", json.dumps(ppl), flush=True)
    for s in samples:
        print(f"--- {s['prompt']!r}\n{s['completion']}", flush=True)

    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 1
    model.generation_config.bos_token_id = 1
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # loads on transformers 4.x and 5.x
    tok_cfg.pop("backend", None)
    cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    info = {
        "script": "scripts/build_realtext_base.py",
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")},
        "data": {
            "pretrain": {"dolly_categories": list(PRETRAIN_CATEGORIES),
                         "hh_records": f"0:{HH_PRETRAIN}",
                         "train_docs": len(split["train"]), "heldout_docs": len(split["heldout"]),
                         "train_tokens": n_train_tokens},
            "finetune": {"dolly_categories": list(FINETUNE_CATEGORIES)},
            "dpo": {"hh_records": f"{HH_PRETRAIN}:"},
        },
        "params": n_params,
        "epochs": epochs,
        "final_loss_ema": round(loss_ema, 4),
        "perplexity": {"heldout_pretrain": ppl["heldout"], "finetune_categories": ppl["finetune"],
                       "hh_dpo_split": ppl["dpo"], "docs_each": args.eval_docs},
        "greedy_samples": samples,
        "train_s": round(train_s, 1),
        "wall_s": round(time.time() - t_start, 1),
        "torch": torch.__version__,
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"saved to {out}  ({size / 1e6:.2f} MB, {time.time() - t_start:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
