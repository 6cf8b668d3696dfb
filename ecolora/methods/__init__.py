"""Federated methods behind one interface: a method is a name, a variant and the user's knobs.

``VARIANTS`` (``methods/variants.py``) lists FedIT, the baselines (FFA-LoRA, FedSA-LoRA, top-k with
error feedback) and the EcoLoRA ablations, each saying what it uploads and citing its source.
"""

from __future__ import annotations

from dataclasses import replace

from ecolora.compress.layout import AdapterLayout
from ecolora.config import CompressConfig
from ecolora.errors import ConfigError
from ecolora.methods.method import ClientUpload, Method, ServerState
from ecolora.methods.variants import VARIANTS, Variant


def build_method(name: str, cfg: CompressConfig, layout: AdapterLayout) -> Method:
    """The method ``name`` with its variant's overrides applied on top of the user's knobs."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(VARIANTS)}")
    variant = VARIANTS[name]
    return Method(name, replace(cfg, **variant.overrides(cfg, layout)), layout, variant)


__all__ = ["VARIANTS", "ClientUpload", "Method", "ServerState", "Variant", "build_method"]
