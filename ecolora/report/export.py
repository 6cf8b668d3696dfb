"""The final global adapter as a standard peft adapter folder, usable without ecolora.

``OUT/adapter/`` holds ``adapter_config.json`` + ``adapter_model.safetensors`` (and the
tokenizer), exactly what ``PeftModel.from_pretrained(base, "OUT/adapter")`` loads, so a
federated run ends with the same artefact a centralized peft run would. The folder is written
beside its final place and swapped in, so a crash never leaves a half-written adapter.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ecolora.train.model import set_params


def export_adapter(model, tokenizer, params: list[np.ndarray], out: Path,
                   name: str = "adapter") -> Path:
    """Save ``params`` loaded into ``model`` (a peft model) as ``out/name``; returns that path."""
    set_params(model, params)
    final = out / name
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.old."))
            final.rename(old / name)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
