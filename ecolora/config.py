"""One run configuration, validated once at the edge (CLI, TOML file, Flower run-config).

Sections are frozen dataclasses, each field with a default and a ``help`` string; fields whose
default is a *reconstruction* of the EcoLoRA paper (spec tag [INF], `shared/spec/ecolora-paper.md`)
say so with ``[INF §n]`` in their help, so ``ecolora knobs`` shows users exactly which defaults are
guesses. Unknown keys fail with a close-match hint, as nanoGPT's configurator does.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ecolora.errors import ConfigError

METHODS = ("fedit", "ffa-lora", "fedsa-lora", "topk-ef", "ecolora", "eco-seg-only", "eco-no-ab",
           "eco-no-ef", "eco-no-golomb")  # ecolora/methods/variants.py says what each sends


def _knob(default: Any, help: str, choices: tuple | None = None) -> Any:
    meta = {"help": help, "choices": choices}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_choices(section: object) -> None:
    for f in fields(section):
        choices = f.metadata.get("choices")
        value = getattr(section, f.name)
        if choices and value not in choices:
            raise ConfigError(f"`{f.name}` must be one of {', '.join(choices)}; got {value!r}")


def _check_range(name: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    ok = (lo < value if lo_open else lo <= value) and value <= hi and math.isfinite(value)
    if not ok:
        left = "(" if lo_open else "["
        raise ConfigError(f"`{name}` must be in {left}{lo}, {hi}], got {value}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = _knob("embedded", "'embedded' (bundled tiny Llama), 'realtext' (bundled BPE Llama "
                 "pretrained on real English), a HF causal LM dir or hub name")
    lora_r: int = _knob(8, "LoRA rank r")
    lora_alpha: float = _knob(16.0, "LoRA alpha (scale alpha/r)")
    lora_dropout: float = _knob(0.0, "LoRA dropout (0 keeps runs bit-reproducible)")
    target_modules: list = _knob(
        [], "module names to adapt; empty = all linear projections of the attention and MLP"
    )
    max_seq_len: int = _knob(128, "truncate prompt+response to this many tokens")
    threads: int = _knob(0, "torch CPU threads; 0 = auto: the fastest bit-identical count by "
                         "timing below 50M parameters, else all cores")
    precision: str = _knob("fp32", "base model weights dtype (LoRA stays fp32)", ("fp32", "bf16"))
    gradient_checkpointing: bool = _knob(False, "recompute activations in backward: less memory")
    device: str = _knob(
        "auto", "where the model runs; auto = CUDA when present", ("auto", "cpu", "cuda")
    )
    max_new_tokens: int = _knob(64, "generation length for answer extraction and samples")

    def __post_init__(self) -> None:
        if self.lora_r < 1:
            raise ConfigError(f"`lora_r` must be >= 1, got {self.lora_r}")
        _check_range("lora_alpha", self.lora_alpha, 0.0, 1e6, lo_open=True)
        _check_range("lora_dropout", self.lora_dropout, 0.0, 0.99)
        if self.max_seq_len < 8:
            raise ConfigError(f"`max_seq_len` must be >= 8, got {self.max_seq_len}")
        _check_choices(self)
        if self.max_new_tokens < 1:
            raise ConfigError(f"`max_new_tokens` must be >= 1, got {self.max_new_tokens}")
        if self.threads < 0:
            raise ConfigError(f"`threads` must be >= 0 (0 = auto), got {self.threads}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _knob("embedded", "'embedded' (generated tasks), a JSON/JSONL file, a hub name")
    eval_dataset: str = _knob("", "eval set; empty = embedded eval split, or a held-out slice")
    fields: dict = _knob({}, "explicit field mapping, e.g. {instruction='prompt', response='out'}")
    train_examples: int = _knob(4000, "examples generated (embedded) or kept (files; 0 = all)")
    eval_examples: int = _knob(400, "eval examples generated or held out")
    partition: str = _knob(
        "dirichlet", "how examples are split over clients: label skew over the category, "
        "1-2 categories each, or size skew", ("dirichlet", "iid", "pathological", "quantity"),
    )
    dirichlet_alpha: float = _knob(0.5, "Dirichlet concentration over categories (non-IID), "
                                   "or over client sizes for partition=quantity")
    categories_per_client: int = _knob(2, "categories each client holds (partition=pathological)")
    category_field: str = _knob("", "column used as the category; empty = the format's own")
    answer_extract: str = _knob(
        "auto", "exact match on: the whole response (teacher forced), the text after '####' "
        "(GSM8K, generated), the last number; auto = gsm8k if references hold '####'",
        ("auto", "exact", "gsm8k", "last_number"),
    )
    eval_samples: int = _knob(3, "generated eval samples written to samples.jsonl per eval")
    categories: list = _knob(
        [], "keep only records of these categories (files), e.g. closed_qa,summarization; "
        "empty = all; applied to the train file and to a separate eval file"
    )
    records: str = _knob(
        "", "'START:STOP' slice of the train file's records in file order (0-based, either "
        "side may be empty), taken before anything else, e.g. 1200: ; empty = all"
    )

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_range("dirichlet_alpha", self.dirichlet_alpha, 0.0, 1e6, lo_open=True)
        if self.train_examples < 0 or self.eval_examples < 1:
            raise ConfigError("`train_examples` must be >= 0 and `eval_examples` >= 1")
        if self.categories_per_client < 1 or self.eval_samples < 0:
            raise ConfigError("`categories_per_client` must be >= 1 and `eval_samples` >= 0")
        if not all(isinstance(c, str) and c for c in self.categories):
            raise ConfigError("`categories` must be a list of non-empty category names")
        parse_records(self.records)


def parse_records(spec: str) -> tuple[int, int | None]:
    """``data.records`` 'START:STOP' -> (start, stop or None); '' is every record."""
    if not spec:
        return 0, None
    start, sep, stop = spec.partition(":")
    try:
        if not sep:
            raise ValueError
        lo = int(start) if start.strip() else 0
        hi = int(stop) if stop.strip() else None
    except ValueError:
        raise ConfigError(f"`records` must be 'START:STOP' (e.g. 1200: or 0:500), got {spec!r}"
                          ) from None
    if lo < 0 or (hi is not None and hi <= lo):
        raise ConfigError(f"`records` needs 0 <= START < STOP, got {spec!r}")
    return lo, hi


@dataclass(frozen=True)
class FedConfig:
    clients: int = _knob(10, "number of simulated clients K")
    participation: float = _knob(1.0, "fraction q of clients sampled each round")
    rounds: int = _knob(30, "federated rounds T")
    local_steps: int = _knob(5, "local optimizer steps E per round")
    batch_size: int = _knob(8, "examples per local step")
    lr: float = _knob(1e-2, "client AdamW learning rate")
    lr_schedule: str = _knob(
        "cosine", "client lr over the run's steps, cosine = base to 10% of base; the theory "
        "needs a decaying lr [INF §8]", ("constant", "cosine", "inv_sqrt")
    )
    weight_decay: float = _knob(0.0, "AdamW weight decay")
    eval_every: int = _knob(5, "evaluate the global model every N rounds (and after the last)")
    seed: int = _knob(0, "seed for data, partition, LoRA init and batches")
    objective: str = _knob("sft", "local objective: supervised fine-tuning or DPO on preference "
                           "pairs (reference = base with adapters off)", ("sft", "dpo"))
    dpo_beta: float = _knob(0.1, "DPO beta: strength of the pull toward the reference model")
    checkpoint_every: int = _knob(5, "save server state every N rounds (and after the last); "
                                  "0 = never; resume with `ecolora run --resume OUT`")

    def __post_init__(self) -> None:
        _check_choices(self)
        for name in ("clients", "rounds", "local_steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        _check_range("participation", self.participation, 0.0, 1.0, lo_open=True)
        _check_range("lr", self.lr, 0.0, 10.0, lo_open=True)
        _check_range("weight_decay", self.weight_decay, 0.0, 10.0)
        _check_range("dpo_beta", self.dpo_beta, 0.0, 1e3, lo_open=True)
        if self.checkpoint_every < 0:
            raise ConfigError(f"`checkpoint_every` must be >= 0, got {self.checkpoint_every}")


@dataclass(frozen=True)
class CompressConfig:
    """EcoLoRA's three techniques; every choice the paper leaves open is a knob (spec §11)."""

    num_segments: int = _knob(2, "segments S; client k uploads segment (k+t) mod S [INF §4]")
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
        0.0, "bytes budget per client and round, as a fraction of FedIT's dense 16-bit upload "
        "of the whole adapter; > 0 sets the kept count of the segment (rho_a/rho_b then only "
        "split it between A and B, and no warm-up applies), so the whole-run upload stays under "
        "the budget at every horizon; 0 = fixed densities (ecolora's own, issue 12)",
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
        "all_untransmitted", "residual keeps everything not sent (the unsent segments too, sent "
        "when their turn comes), only what top-k dropped from the sent segment, or everything "
        "at 1/S so a segment carries the mean delta since its last upload [INF §5.4]",
        ("sparsified_only", "all_untransmitted", "segment_mean"),
    )
    residual_decay: float = _knob(1.0, "residual multiplied by this each round (1 = classic EF)")
    stale_decay: float = _knob(
        0.0, "residual multiplied by this for every round the client was not sampled; 0 = a "
        "returning client drops its stale residual, 1 = classic EF keeps it (ecolora's own "
        "knob for partial participation, measured in the README) [INF §5.4]",
    )
    golomb_param: str = _knob(
        "empirical_best", "Rice parameter rule [INF §6]",
        ("rice_kiely_floor", "rice_ceil", "empirical_best"),
    )
    value_dtype: str = _knob("fp16", "dtype of sent values [INF §6, Q4]", ("fp16", "bf16", "fp32"))
    normalize: str = _knob(
        "uploaders_weight",
        "mean over a segment's uploaders, over all sampled clients, or per entry over the "
        "clients that sent that entry [INF §4.4]",
        ("uploaders_weight", "all_sampled_weight", "senders_weight"),
    )
    server_opt: str = _knob(
        "sgd", "server optimizer on the aggregated delta: plain step (the paper's), FedAvgM "
        "momentum, or lazy FedAdam (ecolora's own, methods/server_opt.py)",
        ("sgd", "avgm", "adam"),
    )
    server_lr: float = _knob(1.0, "server step size: global += server_lr * (delta, momentum "
                             "or Adam direction)")
    server_beta1: float = _knob(0.9, "server momentum (avgm) or Adam's first-moment decay")
    server_beta2: float = _knob(0.99, "Adam's second-moment decay (server_opt=adam)")
    server_eps: float = _knob(1e-3, "Adam's epsilon tau (server_opt=adam)")
    compress_download: bool = _knob(False, "sparsify the broadcast global delta [INF Q6]")
    rho_down: float = _knob(0.1, "kept fraction of the broadcast delta when compress_download")
    max_tensor_numel: int = _knob(1 << 28, "decoder refuses tensors larger than this")

    def __post_init__(self) -> None:
        _check_choices(self)
        if self.num_segments < 1:
            raise ConfigError(f"`num_segments` must be >= 1, got {self.num_segments}")
        for name in ("rho_a", "rho_b", "rho_start", "rho_down"):
            _check_range(name, getattr(self, name), 0.0, 1.0, lo_open=True)
        _check_range("residual_decay", self.residual_decay, 0.0, 1.0)
        _check_range("stale_decay", self.stale_decay, 0.0, 1.0)
        _check_range("server_lr", self.server_lr, 0.0, 100.0, lo_open=True)
        _check_range("upload_budget", self.upload_budget, 0.0, 1.0)
        _check_range("server_beta1", self.server_beta1, 0.0, 0.999)
        _check_range("server_beta2", self.server_beta2, 0.0, 0.9999)
        _check_range("server_eps", self.server_eps, 0.0, 1.0, lo_open=True)
        if self.schedule_rounds < 1:
            raise ConfigError(f"`schedule_rounds` must be >= 1, got {self.schedule_rounds}")
        if self.max_tensor_numel < 1:
            raise ConfigError("`max_tensor_numel` must be >= 1")


@dataclass(frozen=True)
class NetworkConfig:
    """Links for the modeled communication time (spec §9: max_k up_k/BW_up + down/BW_down)."""

    uplink_mbps: float = _knob(10.0, "client uplink, Mbit/s")
    downlink_mbps: float = _knob(50.0, "client downlink, Mbit/s")
    latency_ms: float = _knob(50.0, "one-way latency per message, ms")
    transport: str = _knob(
        "tcp", "transfer time: TCP framing + slow start after idle (measured, docs/compare.md), "
        "or latency + bytes/bandwidth (spec §9)", ("tcp", "ideal"),
    )

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_range("uplink_mbps", self.uplink_mbps, 0.0, 1e6, lo_open=True)
        _check_range("downlink_mbps", self.downlink_mbps, 0.0, 1e6, lo_open=True)
        _check_range("latency_ms", self.latency_ms, 0.0, 1e6)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "fed": FedConfig,
    "compress": CompressConfig,
    "network": NetworkConfig,
}


@dataclass(frozen=True)
class RunConfig:
    method: str = "ecolora"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Build from a nested dict (TOML, JSON, Flower run-config); unknown keys are errors."""
        raw = dict(raw)
        method = raw.pop("method", "ecolora")
        sections = {}
        for key, value in raw.items():
            if key not in SECTIONS:
                raise ConfigError(_unknown("section", key, list(SECTIONS) + ["method"]))
            if not isinstance(value, dict):
                raise ConfigError(f"config section [{key}] must be a table, got {value!r}")
            sections[key] = _build_section(SECTIONS[key], value)
        return cls(method=method, **sections)


def _unknown(kind: str, key: str, known: list[str]) -> str:
    near = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"unknown {kind} {key!r}{hint}"


def _coerce(section: type, name: str, value: Any) -> Any:
    f = {f.name: f for f in fields(section)}[name]
    default = f.default if f.default is not MISSING else f.default_factory()
    kind = type(default)
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "1", "on", "yes"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "off", "no"):
            return False
        if isinstance(value, bool):
            return value
    elif kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is str and isinstance(value, str):
        return value
    elif kind is list and isinstance(value, list | str):
        return [v for v in value.split(",") if v] if isinstance(value, str) else list(value)
    elif kind is dict and isinstance(value, dict):
        return dict(value)
    elif isinstance(value, str) and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ConfigError(f"`{name}` expects {kind.__name__}, got {value!r}")


def _build_section(section: type, values: dict[str, Any], base: Any = None) -> Any:
    names = [f.name for f in fields(section)]
    coerced = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(_unknown("knob", key, names))
        coerced[key] = _coerce(section, key, value)
    return replace(base, **coerced) if base is not None else section(**coerced)


def parse_set(items: list[str]) -> dict[str, dict[str, str]]:
    """Parse ``--set section.key=value`` (or a bare ``key`` when only one section has it)."""
    out: dict[str, dict[str, Any]] = {}
    owners: dict[str, list[str]] = {}
    for sec, cls in SECTIONS.items():
        for f in fields(cls):
            owners.setdefault(f.name, []).append(sec)
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." in key:
            sec, name = key.split(".", 1)
            if sec not in SECTIONS:
                raise ConfigError(_unknown("section", sec, list(SECTIONS)))
        else:
            if key not in owners:
                raise ConfigError(_unknown("knob", key, list(owners)))
            if len(owners[key]) > 1:
                raise ConfigError(f"knob {key!r} is ambiguous; write one of "
                                  + ", ".join(f"{s}.{key}" for s in owners[key]))
            sec, name = owners[key][0], key
        if name == "fields" and sec == "data":
            value = _parse_mapping(value)
        out.setdefault(sec, {})[name] = value
    return out


def _parse_mapping(text: str) -> dict[str, str]:
    """``instruction:prompt,response:completion`` -> {'instruction': 'prompt', ...}."""
    mapping = {}
    for pair in text.split(","):
        if ":" not in pair:
            raise ConfigError(f"data.fields expects ours:theirs pairs, got {pair!r}")
        ours, theirs = pair.split(":", 1)
        mapping[ours.strip()] = theirs.strip()
    return mapping


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: invalid TOML ({exc})") from None


def merge(base: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply nested overrides (already split into sections) on top of ``base``."""
    overrides = dict(overrides)
    method = overrides.pop("method", base.method)
    changed = {}
    for sec, values in overrides.items():
        if sec not in SECTIONS:
            raise ConfigError(_unknown("section", sec, list(SECTIONS)))
        if not isinstance(values, dict):
            raise ConfigError(f"config section [{sec}] must be a table, got {values!r}")
        changed[sec] = _build_section(SECTIONS[sec], values, getattr(base, sec))
    return replace(base, method=method, **changed)


def knob_table() -> list[tuple[str, str, str]]:
    """(section.key, default, help) for every knob: feeds `--help` and the README."""
    rows = []
    for sec, cls in SECTIONS.items():
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()
            help_text = f.metadata.get("help", "")
            if f.metadata.get("choices"):
                help_text += f" {{{', '.join(f.metadata['choices'])}}}"
            rows.append((f"{sec}.{f.name}", repr(default), help_text))
    return rows
