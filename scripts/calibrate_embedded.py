"""Calibration check of the embedded task + base model (standalone, CPU).

Reports
  (a) exact match of the base model (no LoRA) on eval records;
  (b) centralized LoRA fine-tuning exact match on the same eval records, printed every
      ``--eval-every`` steps, for each learning rate given (the default budget's centralized
      equivalent: 150 AdamW steps of batch 64, constant lr);
  (c) milliseconds per forward+backward of a batch of 8 with LoRA (the federated local step).

Exact match is greedy by teacher forcing: a record is correct iff, feeding
``prompt + response + EOS`` once, the argmax at every position that predicts a response token
or the final EOS equals that token (= greedy generation yields exactly response + EOS).

Usage::

    python scripts/calibrate_embedded.py --lr 1e-3 2e-3 3e-3
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecolora.data.embedded import CATEGORIES, EMBEDDED_BASE_DIR, make_records  # noqa: E402
from ecolora.data.prompt import format_prompt  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def encode(records, tokenizer):
    """(ids, labels) lists: labels are -100 on the prompt, ids on response + EOS."""
    out = []
    for r in records:
        p = tokenizer(format_prompt(r["instruction"], r["context"]),
                      add_special_tokens=False)["input_ids"]
        a = tokenizer(r["response"], add_special_tokens=False)["input_ids"]
        a = a + [tokenizer.eos_token_id]
        out.append((p + a, [-100] * len(p) + a))
    return out


def collate(items, pad_id):
    T = max(len(i) for i, _ in items)
    ids = torch.full((len(items), T), pad_id, dtype=torch.long)
    labels = torch.full((len(items), T), -100, dtype=torch.long)
    mask = torch.zeros((len(items), T), dtype=torch.long)
    for k, (i, lab) in enumerate(items):
        ids[k, : len(i)] = torch.tensor(i)
        labels[k, : len(lab)] = torch.tensor(lab)
        mask[k, : len(i)] = 1
    return ids, labels, mask


@torch.no_grad()
def exact_match(model, enc, pad_id, batch=100):
    """List of bools, one per encoded record."""
    model.eval()
    correct = []
    for s in range(0, len(enc), batch):
        ids, labels, mask = collate(enc[s : s + batch], pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits
        pred = logits[:, :-1].argmax(-1)
        tgt = labels[:, 1:]
        ok = (pred == tgt) | (tgt == -100)
        correct.extend(ok.all(dim=1).tolist())
    return correct


def summarize(correct, records):
    per = defaultdict(list)
    for c, r in zip(correct, records, strict=True):
        per[r["category"]].append(c)
    total = sum(correct) / len(correct)
    cats = "  ".join(f"{k}={sum(v) / len(v):.2f}" for k, v in
                     sorted(per.items(), key=lambda kv: CATEGORIES.index(kv[0])))
    return total, cats


def load_base(base_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)


def lora_model(base_dir, seed):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS,
                     task_type="CAUSAL_LM")
    return get_peft_model(load_base(base_dir), cfg)


def time_step(base_dir, train_enc, pad_id, reps=40):
    model = lora_model(base_dir, 0)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    rng = random.Random(0)
    batches = [collate(rng.sample(train_enc, 8), pad_id) for _ in range(reps + 5)]
    times = []
    for k, (ids, labels, mask) in enumerate(batches):
        t = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        t_fb = time.perf_counter() - t
        opt.step()
        opt.zero_grad(set_to_none=True)
        t_all = time.perf_counter() - t
        if k >= 5:
            times.append((t_fb, t_all))
    fb = sorted(x[0] for x in times)[len(times) // 2] * 1e3
    al = sorted(x[1] for x in times)[len(times) // 2] * 1e3
    return fb, al


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=EMBEDDED_BASE_DIR)
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-3, 2e-3, 3e-3])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=9600)
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.base)
    pad = tok.pad_token_id
    train = make_records(args.n_train, args.seed)
    evalr = make_records(args.n_eval, args.seed + 10_000)
    train_enc, eval_enc = encode(train, tok), encode(evalr, tok)
    lens = [len(i) for i, _ in train_enc]
    print(f"train {len(train)}  eval {len(evalr)}  seq len mean {sum(lens) / len(lens):.1f} "
          f"max {max(lens)}")
    overlap = len({(r['instruction'], r['context']) for r in evalr}
                  & {(r['instruction'], r['context']) for r in train})
    print(f"eval prompts also in train: {overlap}/{len(evalr)}")

    base = load_base(args.base)
    em, cats = summarize(exact_match(base, eval_enc, pad), evalr)
    print(f"(a) base EM {em:.3f}   {cats}", flush=True)
    del base

    fb, al = time_step(args.base, train_enc, pad)
    print(f"(c) LoRA batch 8: forward+backward {fb:.1f} ms, incl. AdamW step {al:.1f} ms",
          flush=True)

    for lr in args.lr:
        model = lora_model(args.base, args.seed)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                weight_decay=0.0)
        rng = random.Random(args.seed)
        order: list[int] = []
        t0 = time.time()
        print(f"(b) lr {lr:g}")
        for step in range(1, args.steps + 1):
            if len(order) < args.batch:
                idx = list(range(len(train_enc)))
                rng.shuffle(idx)
                order.extend(idx)
            pick, order = order[: args.batch], order[args.batch :]
            ids, labels, mask = collate([train_enc[i] for i in pick], pad)
            model.train()
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % args.eval_every == 0 or step == 10 or step == args.steps:
                em, cats = summarize(exact_match(model, eval_enc, pad), evalr)
                print(f"  step {step:4d}  loss {loss.item():.4f}  EM {em:.3f}   {cats}   "
                      f"{time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
