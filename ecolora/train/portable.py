"""Tokenizer folders that load on transformers 4.x as well as 5.x.

transformers 5 saves fast tokenizers as ``"tokenizer_class": "TokenizersBackend"``, a class that
transformers 4.x does not have (``Tokenizer class TokenizersBackend does not exist``), so a
folder saved by 5.x would break every install the declared floor allows. Both major versions
load ``PreTrainedTokenizerFast`` from the same ``tokenizer.json``, so that is what is written.
"""

from __future__ import annotations

import json
from pathlib import Path

PORTABLE_CLASS = "PreTrainedTokenizerFast"
_FIVE_ONLY = {"TokenizersBackend"}


def make_tokenizer_portable(folder: Path) -> None:
    """Rewrite ``folder/tokenizer_config.json`` in place when it names a 5.x-only class."""
    path = Path(folder) / "tokenizer_config.json"
    if not path.is_file():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("tokenizer_class") not in _FIVE_ONLY:
        return
    cfg["tokenizer_class"] = PORTABLE_CLASS
    cfg.pop("backend", None)  # 5.x's marker for that class; 4.x would pass it on as a kwarg
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
