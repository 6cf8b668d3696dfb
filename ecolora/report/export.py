"""The final global adapter as a standard peft adapter folder, usable without ecolora.

``OUT/adapter/`` holds ``adapter_config.json`` + ``adapter_model.safetensors`` (and the
tokenizer), exactly what ``PeftModel.from_pretrained(base, "OUT/adapter")`` loads, so a
federated run ends with the same artefact a centralized peft run would. ``base_model`` replaces
the local path peft records (``report.model_card.portable_base``) and ``card`` replaces peft's
empty README template. The folder is written
beside its final place and swapped in, so a crash never leaves a half-written adapter.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ecolora.report.results import umask
from ecolora.train.model import set_params
from ecolora.train.portable import make_tokenizer_portable


def export_adapter(model, tokenizer, params: list[np.ndarray], out: Path,
                   name: str = "adapter", base_model: str | None = None,
                   card: str | None = None) -> Path:
    """Save ``params`` loaded into ``model`` (a peft model) as ``out/name``; returns that path."""
    set_params(model, params)
    final = out / name
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}."))
    tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700; the adapter folder follows the umask
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        _describe(tmp, base_model, card)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
            make_tokenizer_portable(tmp)  # transformers 4.x cannot load 5.x's class name
        for file in tmp.rglob("*"):  # safetensors writes 0600 whatever the umask
            if file.is_file():
                file.chmod(0o666 & ~umask())
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


def _describe(folder: Path, base_model: str | None, card: str | None) -> None:
    """Point ``adapter_config.json`` at ``base_model`` instead of the path the base was loaded
    from, and write ``card`` over peft's README template."""
    if base_model is not None:
        path = folder / "adapter_config.json"
        cfg = json.loads(path.read_text(encoding="utf-8"))
        cfg["base_model_name_or_path"] = base_model
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if card is not None:
        (folder / "README.md").write_text(card, encoding="utf-8")
