"""Every method as a *variant* of the one ``Method``: compression overrides plus three switches.

A variant never carries its own algorithm. It says (1) how it changes the user's compression
knobs, (2) which LoRA tensor kinds are trained, (3) which are shared (uploaded, aggregated,
broadcast) and so, by difference, which stay local on each client, and (4) how kept positions are
written (Rice/Golomb through ``compress.wire``, or raw int32 through ``methods.rawpos``). So FedIT,
the baselines and the EcoLoRA ablations all go through the same segmenting, top-k, error
feedback, aggregation and framing code, and their byte counts compare like with like.

Budget-matched densities: ``topk-ef`` and ``eco-no-ab`` have one density for A and B. They get the
density that keeps the *same number of values per client per round* as ``ecolora`` under the
same knobs (``uniform_density``), so that accuracy differences come from where the budget goes,
not from a larger budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ecolora.compress.layout import AdapterLayout
from ecolora.compress.sparsify import budget_count, sent_value_bits
from ecolora.config import CompressConfig

ALL_KINDS = ("A", "B", "other")
Overrides = Callable[[CompressConfig, AdapterLayout], dict]


@dataclass(frozen=True)
class Variant:
    name: str
    uploads: str  # one line: what a client sends each round
    source: str  # the paper the method comes from
    overrides: Overrides = field(default=lambda cfg, layout: {})
    positions: str = "rice"  # "rice" (Golomb-Rice, compress.wire) or "int32" (methods.rawpos)
    pack_values: bool = True  # int32 only: pack values as wire v2 does (False: plain values)
    train: tuple[str, ...] = ALL_KINDS  # tensor kinds updated by local training
    share: tuple[str, ...] = ALL_KINDS  # kinds uploaded and aggregated; trained-only stay local


def uniform_density(cfg: CompressConfig, layout: AdapterLayout) -> float:
    """One density for every tensor that keeps as many entries as EcoLoRA's rho_a/rho_b split."""
    n_a = sum(t.numel for t in layout.tensors if t.kind == "A")
    n_b = layout.numel - n_a
    return (cfg.rho_a * n_a + cfg.rho_b * n_b) / layout.numel


_DENSE = dict(num_segments=1, rho_a=1.0, rho_b=1.0, error_feedback=False,
              sparsity_schedule="constant", compress_download=False, server_opt="sgd",
              server_lr=1.0, upload_budget=0.0, value_bits=16)  # FedAvg on LoRA (spec §3), plain
# server step, 16-bit values: without error feedback 8/4-bit codes would lose their error


def _dense(cfg: CompressConfig, layout: AdapterLayout) -> dict:
    return dict(_DENSE)


def _uniform(cfg: CompressConfig, rho: float) -> dict:
    """One density ``rho`` in every tensor, top-k per tensor (pooling across the segment would
    re-create an adaptive split from the magnitudes). A warm-up (linear/exp) is kept;
    energy_split is EcoLoRA's own A/B split and becomes constant."""
    schedule = "constant" if cfg.sparsity_schedule == "energy_split" else cfg.sparsity_schedule
    return dict(rho_a=rho, rho_b=rho, sparsity_schedule=schedule, topk_scope="per_tensor")


def _topk_ef(cfg: CompressConfig, layout: AdapterLayout) -> dict:
    # EcoLoRA sends one of S segments at rho_a/rho_b; top-k sends everything, so divide by S,
    # the warm-up's start too, so that the budget matches in the warm-up rounds as well.
    # classic error feedback, as DGC has it: a returning client keeps its whole residual
    if cfg.upload_budget:  # ecolora's budgeted count on a segment of average size, at
        n = layout.numel  # ecolora's value width (8-bit codes keep more entries than fp16)
        kept = budget_count(cfg.upload_budget, n // cfg.num_segments, n, sent_value_bits(cfg))
        rho = kept / n
    else:
        rho = min(1.0, uniform_density(cfg, layout) / cfg.num_segments)
    return dict(_uniform(cfg, rho), num_segments=1, error_feedback=True, upload_budget=0.0,
                value_bits=16,  # raw int32 positions and plain values: no v3 codes
                rho_start=cfg.rho_start / cfg.num_segments, stale_decay=1.0,
                stale_clip=0.0,
                server_opt="sgd", server_lr=1.0)  # the classic baseline: plain server step


def _no_ab(cfg: CompressConfig, layout: AdapterLayout) -> dict:
    return _uniform(cfg, uniform_density(cfg, layout))


def _seg_only(cfg: CompressConfig, layout: AdapterLayout) -> dict:
    return dict(rho_a=1.0, rho_b=1.0, error_feedback=False, sparsity_schedule="constant",
                upload_budget=0.0, value_bits=16)  # dense, no EF: no codes to lose error in


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("fedit", "the whole dense LoRA delta (A and B), values in value_dtype",
            "Zhang et al. 2024, 'Towards Building the Federated GPT: Federated Instruction "
            "Tuning' (ICASSP 2024); spec §3", _dense),
    Variant("ffa-lora", "the dense delta of B only; A stays frozen at its shared random init",
            "Sun et al. 2024, 'Improving LoRA in Privacy-preserving Federated Learning' "
            "(ICLR 2024)", _dense, train=("B", "other"), share=("B", "other")),
    Variant("fedsa-lora", "the dense delta of A only; each client keeps its own B (personalized, "
            "evaluated per client)",
            "Guo et al. 2025, 'Selective Aggregation for Low-Rank Adaptation in Federated "
            "Learning' (ICLR 2025)", _dense, share=("A",)),
    Variant("topk-ef", "uniform top-k of the whole delta plus residual, raw int32 positions "
            "and plain values, budget-matched to ecolora",
            "Stich et al. 2018, 'Sparsified SGD with Memory' (NeurIPS); Lin et al. 2018, "
            "'Deep Gradient Compression' (ICLR)", _topk_ef, positions="int32",
            pack_values=False),
    Variant("ecolora", "one round-robin segment, top-k at rho_a/rho_b with error feedback, "
            "Golomb-Rice positions",
            "Liu et al. 2025, 'EcoLoRA' (EMNLP 2025); spec §4-§7"),
    Variant("eco-seg-only", "one round-robin segment, dense (no sparsification, no EF)",
            "EcoLoRA ablation, spec §4 only", _seg_only),
    Variant("eco-no-ab", "ecolora with one budget-matched density in every tensor (no A/B "
            "split, no pooling across the segment)",
            "EcoLoRA ablation of spec §5.2 (A/B-specific sparsity)", _no_ab),
    Variant("eco-no-ef", "ecolora without the error-feedback residual",
            "EcoLoRA ablation of spec §5.4",
            lambda cfg, layout: dict(error_feedback=False)),
    Variant("eco-no-golomb", "ecolora with raw int32 positions instead of Golomb-Rice (16-bit "
            "values: the int32 framing has no 8/4-bit codes)",
            "EcoLoRA ablation of spec §6", lambda cfg, layout: dict(value_bits=16),
            positions="int32"),
]}
