"""Build the embedded base model: a character-level tokenizer and a tiny pretrained Llama.

Deterministic (fixed seeds, CPU, 2 threads). Writes ``ecolora/assets/embedded_base/``:
tokenizer files + ``config.json`` + ``model.safetensors`` (float16).

The model is pretrained on a GENERATED corpus of plain statements that carry the skills and
facts of the embedded task (see :mod:`ecolora.data.embedded`): made-up country facts, digit
addition/subtraction, alphabet order, number words and counting letters, each in several
surface forms, including the instruction phrasings answered in prose ("... The answer is X.").
The corpus never uses the ``Q: ...\\nA: `` prompt format, and every statement ends with a full
stop (EOS only follows a full stop at the end of a document), so the base knows the skills but
not the prompt-answer-EOS format: LoRA has to learn that mapping.

Usage::

    python scripts/build_embedded_base.py            # defaults = the shipped asset
    python scripts/build_embedded_base.py --steps 200 --out /tmp/base   # quick try
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecolora.data.embedded import (  # noqa: E402
    ARITH_MAX,
    EMBEDDED_BASE_DIR,
    FACTS,
    LETTERS,
    NUMBER_WORDS,
    make_records,
    random_word,
)
from ecolora.train.portable import make_tokenizer_portable  # noqa: E402

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
# Every printable ASCII character plus newline: covers all prompts and answers.
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]
MAX_POS = 128


# ----------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------
def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for ch in CHARS:
        vocab[ch] = len(vocab)
    # BPE without merges over the raw string (no pre-tokenizer) = one token per character.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([PAD, EOS, UNK])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=MAX_POS,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    return fast, vocab


# ----------------------------------------------------------------------------------------
# corpus: skills and facts in plain statements, never the instruction format
# ----------------------------------------------------------------------------------------
def _fact_statement(rng: random.Random) -> str:
    f = rng.choice(FACTS)
    c, cap, lang = f["country"], f["capital"], f["language"]
    return rng.choice((
        f"The capital of {c} is {cap}.",
        f"{cap} is the capital of {c}.",
        f"The people of {c} speak {lang}.",
        f"The language of {c} is {lang}.",
        f"{c} has the capital {cap} and the language {lang}.",
        f"In {c} the language is {lang} and the capital is {cap}.",
        f"The language spoken in {c} is {lang}.",
        f"Country\n{c}\nhas the capital {cap}.",
        f"Country\n{c}\nspeaks the language {lang}.",
    ))


def _arith_statement(rng: random.Random) -> str:
    a, b = rng.randint(0, ARITH_MAX), rng.randint(0, ARITH_MAX)
    if rng.random() < 0.5:
        s = a + b
        return rng.choice((
            f"{a} + {b} = {s}.",
            f"{a} plus {b} makes {s}.",
            f"The sum of {a} and {b} is {s}.",
            f"{a} plus {b} is {s}.",
            f"Adding the numbers\n{a} and {b}\ngives {s}.",
        ))
    a, b = max(a, b), min(a, b)
    d = a - b
    return rng.choice((
        f"{a} - {b} = {d}.",
        f"{a} take away {b} leaves {d}.",
        f"The difference of {a} and {b} is {d}.",
        f"{a} minus {b} is {d}.",
        f"Taking the second from the first of\n{a} and {b}\nleaves {d}.",
    ))


def _alphabet_statement(rng: random.Random) -> str:
    i = rng.randrange(25)
    a, b = LETTERS[i], LETTERS[i + 1]
    return rng.choice((
        f"After {a} comes {b}.",
        f"The letter after {a} is {b}.",
        f"Before {b} comes {a}.",
        f"The letter before {b} is {a}.",
        f"In the alphabet, {a} is followed by {b}.",
        f"The letter\n{a}\nis followed by {b}.",
        f"The letter\n{b}\ncomes right after {a}.",
    ))


def _numbers_statement(rng: random.Random) -> str:
    k = rng.randrange(len(NUMBER_WORDS))
    w = NUMBER_WORDS[k]
    return rng.choice((
        f"The number {k} is spelled {w}.",
        f"{w} is written {k}.",
        f"{k} in words is {w}.",
        f"The word {w} means {k}.",
        f"The word\n{w}\nstands for the number {k}.",
        f"The number\n{k}\nis called {w}.",
    ))


def _count_statement(rng: random.Random) -> str:
    w = random_word(rng, 2, 9)
    n = len(w)
    return rng.choice((
        f"The word {w} has {n} letters.",
        f"There are {n} letters in {w}.",
        f"len({w}) = {n}.",
        f"The number of letters in {w} is {n}.",
        f"Counting the letters of the word\n{w}\ngives {n}.",
    ))


def _question_statement(rng: random.Random) -> str:
    """An instruction phrasing answered in prose: "<instruction> [context] The answer is X."

    This is NOT the prompt format: no "Q:"/"A:" markers, a lead-in before the answer and a full
    stop after it (never EOS), so the base still scores ~0 exact match on the prompt format.
    """
    r = make_records(1, rng.randrange(10**9))[0]
    if r["context"]:
        return f"{r['instruction']}\n{r['context']}\nThe answer is {r['response']}."
    return f"{r['instruction']} The answer is {r['response']}."


_STATEMENTS = (_fact_statement, _arith_statement, _alphabet_statement, _numbers_statement,
               _count_statement, _question_statement)


def make_document(rng: random.Random, max_chars: int) -> str:
    """Statements joined by spaces/newlines, up to a random length <= max_chars."""
    limit = rng.randint(40, max_chars)
    parts: list[str] = []
    length = 0
    while True:
        s = rng.choice(_STATEMENTS)(rng)
        add = len(s) + (1 if parts else 0)
        if parts and length + add > limit:
            break
        if not parts and len(s) > max_chars:
            continue
        parts.append(s)
        length += add
    out = parts[0]
    for p in parts[1:]:
        out += (" " if rng.random() < 0.7 else "\n") + p
    return out


def encode_batch(docs: list[str], vocab: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (docs + EOS, right-padded) and labels (-100 on padding)."""
    seqs = [[vocab[ch] for ch in d] + [vocab[EOS]] for d in docs]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), vocab[PAD], dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(s)
    return ids, labels


# ----------------------------------------------------------------------------------------
# model + training
# ----------------------------------------------------------------------------------------
def make_config(vocab_size: int, hidden: int, layers: int, heads: int, inter: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=MAX_POS,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        rope_theta=10000.0,
        attention_dropout=0.0,
        initializer_range=0.02,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=EMBEDDED_BASE_DIR)
    ap.add_argument("--steps", type=int, default=4000,
                    help="length of the warmup + cosine lr schedule")
    ap.add_argument("--stop-at", type=int, default=2500,
                    help="stop after this many steps of that schedule (the shipped base stops at "
                         "2500 of 4000: later steps barely lowered the loss on 2 CPU cores)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--inter", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt", type=Path, default=None,
                    help="checkpoint file: saved every 100 steps, resumed from if present "
                         "(the result is the same as an uninterrupted run)")
    args = ap.parse_args(argv)

    from transformers import LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    tokenizer, vocab = build_tokenizer()
    config = make_config(len(tokenizer), args.hidden, args.layers, args.heads, args.inter)
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params:,}  vocab: {len(tokenizer)}", flush=True)

    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98),
    )
    warmup = max(1, args.steps // 30)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    t0 = time.time()
    ema = None
    start = 0
    if args.ckpt is not None and args.ckpt.exists():
        ck = torch.load(args.ckpt, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        rng.setstate(ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        start, ema = ck["step"], ck["ema"]
        print(f"resumed from {args.ckpt} at step {start}", flush=True)
    end = min(args.steps, args.stop_at)
    for step in range(start, end):
        if args.ckpt is not None and step % 100 == 0 and step > start:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                        "step": step, "ema": ema}, args.ckpt)
        docs = [make_document(rng, MAX_POS - 1) for _ in range(args.batch)]
        ids, labels = encode_batch(docs, vocab)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0 or step == end - 1:
            print(f"step {step:5d}  loss {ema:.4f}  lr {lr_at(step):.2e}  "
                  f"{time.time() - t0:6.0f}s", flush=True)

    model.eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 1
    model.generation_config.bos_token_id = 1
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    make_tokenizer_portable(out)  # loads on transformers 4.x and 5.x
    (out / "build_info.json").write_text(json.dumps({
        "script": "scripts/build_embedded_base.py",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("out", "ckpt")},
        "params": n_params,
        "final_loss_ema": round(ema or 0.0, 4),
    }, indent=2) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"saved to {out}  ({size / 1e6:.2f} MB, {time.time() - t0:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
