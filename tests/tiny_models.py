"""Tiny random causal LMs of several architectures, saved locally with the embedded tokenizer.

Nothing is downloaded: each config is a few thousand parameters, built with a fixed seed and
``save_pretrained`` into a temp folder next to a copy of the bundled character tokenizer, so
``ecolora`` loads it like any local model folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ecolora.data.embedded import EMBEDDED_BASE_DIR

VOCAB = 99  # the embedded character tokenizer's vocabulary
SPECIAL = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1}


def _configs() -> dict:
    import transformers as T

    small = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                 num_attention_heads=2, max_position_embeddings=256, **SPECIAL)
    return {
        "llama": T.LlamaConfig(num_key_value_heads=2, **small),
        "mistral": T.MistralConfig(num_key_value_heads=1, **small),
        "qwen2": T.Qwen2Config(num_key_value_heads=1, **small),
        "gemma": T.GemmaConfig(num_key_value_heads=1, head_dim=8, **small),
        "phi": T.PhiConfig(resid_pdrop=0.0, embd_pdrop=0.0, **small),
        "gpt_neox": T.GPTNeoXConfig(hidden_dropout=0.0, attention_dropout=0.0, **small),
        "gpt2": T.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=256,
                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **SPECIAL),
    }


ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma", "phi", "gpt_neox", "gpt2")


def build_tiny(arch: str, folder: Path, chat_template: str | None = None) -> Path:
    """Save a tiny random ``arch`` model and the embedded tokenizer into ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(EMBEDDED_BASE_DIR / name, folder / name)
    if chat_template is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder)
        tok.chat_template = chat_template
        tok.save_pretrained(folder)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_configs()[arch]).save_pretrained(folder)
    return folder
