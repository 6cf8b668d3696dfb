"""Base model + LoRA through peft, and the bridge between peft's tensors and flat numpy params.

One base model is loaded once; clients differ only in the LoRA values loaded into it before they
train (``set_params``), so memory per client is its adapters and residual, never a model copy.

Any ``AutoModelForCausalLM`` works. LoRA targets are picked per architecture (``TARGETS``, keyed
by ``config.model_type``): the attention and MLP projections under each family's own names
(GPT-2's fused ``c_attn``, GPT-NeoX's ``query_key_value``, ...), so the adapter is the one the
LoRA literature describes for that family and never touches the embeddings or the LM head. An
unknown family falls back to peft's ``"all-linear"``; ``model.target_modules`` overrides both.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ecolora.compress.layout import AdapterLayout
from ecolora.config import ModelConfig
from ecolora.errors import ModelError

#: The bundled real-text base (``model.name = "realtext"``), built by
#: ``scripts/build_realtext_base.py``: a byte-level BPE Llama pretrained on Dolly/HH text.
REALTEXT_BASE_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "realtext_base"


def resolve_model_path(name: str) -> str:
    """'embedded'/'realtext' -> a bundled base; a folder must hold config.json; else a hub name."""
    if name == "embedded":
        from ecolora.data.embedded import EMBEDDED_BASE_DIR

        return str(EMBEDDED_BASE_DIR)
    if name == "realtext":
        if not (REALTEXT_BASE_DIR / "config.json").is_file():
            raise ModelError(f"the realtext base is missing ({REALTEXT_BASE_DIR}); build it with "
                             "python scripts/build_realtext_base.py")
        return str(REALTEXT_BASE_DIR)
    path = Path(name)
    if path.exists() or name.startswith((".", "/", "~")):
        if not path.is_dir():
            raise ModelError(f"model path is not a folder: {name}")
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder has no config.json: {name}")
        _check_config_json(path / "config.json", name)
    return name


def _check_config_json(path: Path, name: str) -> None:
    """transformers fails on a config.json that is not a JSON object with a TypeError deep down."""
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = getattr(exc, "msg", None) or getattr(exc, "strerror", None) or str(exc)
        raise ModelError(f"model folder {name}: config.json is not valid JSON ({reason})"
                         ) from None
    if not isinstance(raw, dict):
        raise ModelError(f"model folder {name}: config.json must hold a JSON object, got "
                         f"{type(raw).__name__}")


_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_NEOX_LIKE = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
TARGETS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma",
                     "gemma2", "gemma3_text", "olmo", "olmo2", "granite", "smollm3"),
                    _LLAMA_LIKE),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    **dict.fromkeys(("gpt_neox", "falcon", "bloom"), _NEOX_LIKE),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "opt": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    "gptj": ("q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def target_modules(model_type: str, override: list[str] | None = None) -> list[str] | str:
    """LoRA target module names for ``model_type``; the user's ``override`` wins."""
    if override == ["all-linear"] or override == "all-linear":
        return "all-linear"  # peft's keyword: every linear layer but the output head
    if override:
        return list(override)
    return list(TARGETS.get(model_type, ())) or "all-linear"


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when this process can see a GPU, else CPU; 'cuda' without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device=cuda but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def quiet_hf() -> None:
    """transformers and peft print only errors: their notices would tear the progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    logging.getLogger("peft").setLevel(logging.ERROR)


def load_model(cfg: ModelConfig, seed: int):
    """(peft model, tokenizer) with LoRA attached; LoRA init is seeded by ``seed``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    quiet_hf()
    path = resolve_model_path(cfg.name)
    offline = not Path(path).is_dir()
    from safetensors import SafetensorError

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        base, info = AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[cfg.precision], output_loading_info=True,
            ignore_mismatched_sizes=True)  # mismatches are reported below, in one line
    except SafetensorError as exc:  # a truncated or damaged weights file
        raise ModelError(f"cannot load model {cfg.name!r}: damaged weights file "
                         f"({_first_line(exc)})") from None
    except (OSError, ValueError, KeyError, ImportError, TypeError, RuntimeError) as exc:
        where = "hub name (no network?)" if offline else "folder"
        raise ModelError(
            f"cannot load model {cfg.name!r} as a causal LM {where}: {_first_line(exc)}"
        ) from None
    _check_weights(cfg.name, info, base, tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise ModelError(f"tokenizer of {cfg.name!r} has no EOS token")
    if cfg.gradient_checkpointing:  # non-reentrant: works with frozen inputs, no hook needed
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.config.use_cache = False
    torch.manual_seed(seed)
    model = attach_lora(base, cfg)
    model.to(resolve_device(cfg.device))
    model.train()
    return model, tokenizer


def attach_lora(base, cfg: ModelConfig):
    """``base`` with peft LoRA attached as every ecolora model gets it (``load_model``, and the
    weightless meta-device models of ``ecolora estimate``), so both count the same tensors.
    The caller seeds torch first when the init matters."""
    from peft import LoraConfig, get_peft_model

    targets = target_modules(base.config.model_type, cfg.target_modules)
    try:
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, bias="none", task_type="CAUSAL_LM",
                          fan_in_fan_out=base.config.model_type == "gpt2")  # GPT-2's Conv1D
        return get_peft_model(base, lora)
    except ValueError as exc:
        reason = str(exc).splitlines()[0]
        raise ModelError(f"cannot attach LoRA to {cfg.name!r}: {reason}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _check_weights(name: str, info: dict, base, tokenizer) -> None:
    """Weights that do not fit config.json are an error, never a silently re-initialized layer."""
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: m[0])
    if mismatched:
        key, have, want = mismatched[0]
        raise ModelError(f"model {name!r}: weights do not match config.json ({len(mismatched)} "
                         f"tensors differ, e.g. {key}: {tuple(have)} in the file, "
                         f"{tuple(want)} by the config)")
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelError(f"model {name!r}: weights do not match config.json ({len(missing)} "
                         f"tensors missing from the weights file, e.g. {missing[0]})")
    rows = base.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ModelError(f"model {name!r}: the tokenizer has {len(tokenizer)} tokens but the "
                         f"embedding only {rows} rows")


def lora_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    """The trainable LoRA tensors in a fixed order (module order of the model)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def layout_of(model) -> AdapterLayout:
    return AdapterLayout.from_shapes({n: tuple(p.shape) for n, p in lora_parameters(model)})


def get_params(model) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().astype(np.float32).ravel().copy()
            for _, p in lora_parameters(model)]


@torch.no_grad()
def set_params(model, params: list[np.ndarray]) -> None:
    for (_, p), v in zip(lora_parameters(model), params, strict=True):
        p.copy_(torch.from_numpy(v).view(p.shape))
