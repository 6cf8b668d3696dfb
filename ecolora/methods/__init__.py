"""Federated methods behind one interface; a method is a name plus a compression preset."""

from __future__ import annotations

from dataclasses import replace

from ecolora.compress.layout import AdapterLayout
from ecolora.config import CompressConfig
from ecolora.methods.method import ClientUpload, Method, ServerState

# FedIT (Zhang et al., 2024, "Towards Building the Federated GPT"): every client uploads its
# whole dense LoRA delta and the server averages A and B separately (spec §3).
_PRESETS = {
    "fedit": dict(num_segments=1, rho_a=1.0, rho_b=1.0, error_feedback=False,
                  sparsity_schedule="constant", compress_download=False),
    "ecolora": {},
}


def build_method(name: str, cfg: CompressConfig, layout: AdapterLayout) -> Method:
    """The method ``name`` with its preset applied on top of the user's compression knobs."""
    return Method(name, replace(cfg, **_PRESETS[name]), layout)


__all__ = ["ClientUpload", "Method", "ServerState", "build_method"]
