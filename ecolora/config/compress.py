"""The compression section: EcoLoRA's knobs, each naming the spec section it reconstructs."""

from __future__ import annotations

from dataclasses import dataclass

from ecolora.config.knobs import _check_choices, _check_range, _knob
from ecolora.errors import ConfigError


@dataclass(frozen=True)
class CompressConfig:
    """EcoLoRA's three techniques; every choice the paper leaves open is a knob (spec §11)."""

    num_segments: int = _knob(
        1, "segments S; client k uploads segment (k+t) mod S [INF §4]. Under the upload budget "
        "S=1 (each client sends the top of its whole delta) beat S=2/4/8 on every matrix row "
        "(README); S >= 2 is the paper's round-robin sharing")
    segment_by: str = _knob(
        "module", "segment units: whole tensors, layers or flat chunks [INF §4.1]",
        ("module", "layer", "flat_chunks"),
    )
    rho_a: float = _knob(0.05, "kept fraction of each uploaded A tensor [INF §5.2]")
    rho_b: float = _knob(0.2, "kept fraction of each uploaded B tensor [INF §5.2]")
    sparsity_schedule: str = _knob(
        "exp", "how densities change over rounds; exp = geometric warm-up from rho_start, "
        "which closes EcoLoRA's early-round lag behind FedIT [INF §5.3]",
        ("constant", "linear", "exp", "energy_split"),
    )
    upload_budget: float = _knob(
        0.085, "bytes budget per client and round, as a fraction of FedIT's dense 16-bit "
        "upload of the whole adapter; > 0 sets the kept count of the segment (rho_a/rho_b then "
        "only split it between A and B, and no warm-up applies), so the whole-run upload stays "
        "under the budget at every horizon (a payload over it is re-encoded with fewer "
        "entries); 0 = fixed densities and the warm-up. 0.085 with 8-bit values is 9.8% of "
        "FedIT's real (DEFLATEd) bytes on the embedded and Dolly rows (ecolora's own; "
        "default chosen on the robustness matrix, README)",
    )
    rho_start: float = _knob(0.5, "density at round 0 for linear/exp schedules [INF §5.3]")
    schedule_rounds: int = _knob(5, "rounds to go from rho_start to rho_a/rho_b [INF §5.3]")
    topk_scope: str = _knob(
        "per_segment", "top-k per tensor (rho_a/rho_b each), across the whole segment (the "
        "rho_a/rho_b budgets pooled: the largest entries win, A or B), or across the segment's "
        "A and across its B tensors [INF §5.1]", ("per_tensor", "per_segment", "per_kind"),
    )
    error_feedback: bool = _knob(True, "keep what was not sent in a client residual [INF §5.4]")
    residual_scope: str = _knob(
        "auto", "residual keeps everything not sent (the unsent segments too, sent when their "
        "turn comes), only what top-k dropped from the sent segment, or everything at 1/S so a "
        "segment carries the mean delta since its last upload; auto = segment_mean for S <= 2, "
        "sparsified_only for S >= 3, where the mean delta is too stale (S=4 and S=8 rows of the "
        "robustness matrix, README) [INF §5.4]",
        ("auto", "sparsified_only", "all_untransmitted", "segment_mean"),
    )
    residual_decay: float = _knob(1.0, "residual multiplied by this each round (1 = classic EF)")
    stale_decay: float = _knob(
        1.0, "residual multiplied by this for every round the client was not sampled; 1 = "
        "classic EF keeps it, 0 = a returning client drops its stale residual (ecolora's own "
        "knob for partial participation; 1 with stale_clip 0.5 chosen on the participation "
        "0.3 and 50-client rows, README) [INF §5.4]",
    )
    stale_clip: float = _knob(
        0.5, "when > 0, a returning client's (stale-decayed) residual is scaled down so its norm "
        "is at most stale_clip x the norm of its fresh delta: a stale residual can then never "
        "outweigh what the client just trained; 0 = no cap (ecolora's own, issue 12; chosen "
        "on the participation 0.3 and 50-client rows, README) [INF §5.4]")
    golomb_param: str = _knob(
        "empirical_best", "Rice parameter rule [INF §6]",
        ("rice_kiely_floor", "rice_ceil", "empirical_best"),
    )
    value_dtype: str = _knob("fp16", "dtype of sent values [INF §6, Q4]", ("fp16", "bf16", "fp32"))
    value_bits: int = _knob(
        8, "bits per uploaded value: 16 = value_dtype; 8 or 4 = linear codes with one fp32 scale "
        "per record (wire format v3), the quantization error kept in the client residual. At "
        "equal bytes 8 bits send about 1.4x the entries of fp16 and won on 4 of 5 matrix rows "
        "(ecolora's own, issue 13; README, docs/wire.md)",
    )
    value_rounding: str = _knob(
        "nearest", "rounding of 8/4-bit values: nearest, or stochastic (unbiased, seeded by "
        "round and client) (ecolora's own, issue 13)", ("nearest", "stochastic"),
    )
    sparse_download: bool = _knob(
        True, "broadcast only the entries of the global change that are nonzero, positions "
        "coded like uploads (dense where that is smaller); lossless: the same global model as "
        "the dense broadcast, so it is on by default; false = the paper's dense broadcast "
        "(ecolora's own, issue 13)",
    )
    normalize: str = _knob(
        "uploaders_weight",
        "mean over a segment's uploaders, over all sampled clients, or per entry over the "
        "clients that sent that entry [INF §4.4]",
        ("uploaders_weight", "all_sampled_weight", "senders_weight"),
    )
    segment_memory: float = _knob(
        0.0, "weight beta of the server's memory of every client's latest upload per segment: "
        "step = (1-beta) * mean of this round's uploaders + beta * mean of all clients' latest "
        "(MIFA/FedStale style; server-side only, no bytes; ecolora's own, methods/memory.py)")
    server_opt: str = _knob(
        "sgd", "server optimizer on the aggregated delta: plain step (the paper's), FedAvgM "
        "momentum, or lazy FedAdam (ecolora's own, methods/server_opt.py)",
        ("sgd", "avgm", "adam"),
    )
    server_lr: float = _knob(
        0.0, "server step size: global += server_lr * (delta, momentum or Adam direction); 0 = "
        "auto: 2 (twice FedIT's global step, what S=2 with all_untransmitted gave) where the "
        "residual is segment_mean or S = 1, else 1, since the 2x step on a sparsified_only "
        "segment lost at S=4 (ecolora's own; chosen on the robustness matrix, README). FedIT, "
        "the other dense baselines and topk-ef always step at 1")
    dpo_server_lr: float = _knob(
        1.0, "server_lr under objective=dpo: on HH-RLHF DPO the 2x step lost 2.0 points and its "
        "DPO eval loss rose after round 10, where step 1 kept FedIT's accuracy (ecolora's own; "
        "README)")
    server_beta1: float = _knob(0.9, "server momentum (avgm) or Adam's first-moment decay")
    server_beta2: float = _knob(0.99, "Adam's second-moment decay (server_opt=adam)")
    server_eps: float = _knob(1e-3, "Adam's epsilon tau (server_opt=adam)")
    compress_download: bool = _knob(
        False, "lossy broadcast: the top of the server's pending change (this round's step plus "
        "what earlier broadcasts left out, kept in a server residual: EF21-P's model-space "
        "error feedback), applied to the clients' copies; the server's own model stays exact "
        "(served_model says which of the two is evaluated and saved) [INF Q6]")
    rho_down: float = _knob(
        0.1, "kept fraction of each broadcast tensor when compress_download with "
        "download_budget=0, or for the int32-position variants (fp16 values)")
    download_budget: float = _knob(
        0.1, "bytes of each lossy broadcast (compress_download) as a fraction of FedIT's dense "
        "16-bit download: the top-k is pooled over every shared tensor, values are coded at "
        "download_bits, and the budget caps the encoded bytes; 0 = rho_down per tensor "
        "(ecolora's own, issue 13; chosen on the embedded default, README)")
    download_bits: int = _knob(
        8, "bits per value of a budgeted lossy broadcast: 16 = value_dtype, 8 or 4 = linear "
        "codes with one scale per record; the rounding error stays in the server residual "
        "(ecolora's own, issue 13; 8 against 4 at budget 0.1 on one seed, README)")
    served_model: str = _knob(
        "clients", "under a lossy broadcast, the model evaluated and saved: the clients' copy "
        "(what they train from), or the server's own model, which adds what the broadcasts "
        "have not sent yet (ecolora's own, issue 13)", ("clients", "server"))
    max_tensor_numel: int = _knob(1 << 28, "decoder refuses tensors larger than this")

    def __post_init__(self) -> None:
        _check_choices(self)
        if self.num_segments < 1:
            raise ConfigError(f"`num_segments` must be >= 1, got {self.num_segments}")
        for name in ("rho_a", "rho_b", "rho_start", "rho_down"):
            _check_range(name, getattr(self, name), 0.0, 1.0, lo_open=True)
        _check_range("residual_decay", self.residual_decay, 0.0, 1.0)
        _check_range("stale_decay", self.stale_decay, 0.0, 1.0)
        _check_range("stale_clip", self.stale_clip, 0.0, 100.0)
        _check_range("segment_memory", self.segment_memory, 0.0, 1.0)
        _check_range("server_lr", self.server_lr, 0.0, 100.0)
        _check_range("dpo_server_lr", self.dpo_server_lr, 0.0, 100.0, lo_open=True)
        _check_range("upload_budget", self.upload_budget, 0.0, 1.0)
        _check_range("download_budget", self.download_budget, 0.0, 1.0)
        _check_range("server_beta1", self.server_beta1, 0.0, 0.999)
        _check_range("server_beta2", self.server_beta2, 0.0, 0.9999)
        _check_range("server_eps", self.server_eps, 0.0, 1.0, lo_open=True)
        if self.schedule_rounds < 1:
            raise ConfigError(f"`schedule_rounds` must be >= 1, got {self.schedule_rounds}")
        for name in ("value_bits", "download_bits"):
            if getattr(self, name) not in (4, 8, 16):
                raise ConfigError(f"`{name}` must be 16, 8 or 4, got {getattr(self, name)}")
        if self.max_tensor_numel < 1:
            raise ConfigError("`max_tensor_numel` must be >= 1")

    @property
    def scope(self) -> str:
        """``residual_scope`` with auto resolved for this S (spec §5.4)."""
        if self.residual_scope != "auto":
            return self.residual_scope
        return "segment_mean" if self.num_segments <= 2 else "sparsified_only"

    @property
    def step(self) -> float:
        """``server_lr`` with 0 (auto) resolved: 2 where the residual carries every delta at
        FedIT's size (segment_mean, or one segment), 1 where it drops or piles them up."""
        if self.server_lr:
            return self.server_lr
        return 2.0 if self.num_segments == 1 or self.scope == "segment_mean" else 1.0
