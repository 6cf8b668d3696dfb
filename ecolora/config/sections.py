"""The model, data, federation and network sections of a run configuration."""

from __future__ import annotations

from dataclasses import dataclass

from ecolora.config.knobs import _check_choices, _check_range, _knob
from ecolora.errors import ConfigError

MAX_SEED = 2**32 - 1  # the range every seeded library here accepts (legacy numpy's is smallest)
MIN_MBPS = 1e-3  # 1 kbit/s: slower links make modeled times meaningless (and overflow)


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
    max_prompt_len: int = _knob(
        0, "prompt budget when prompt+response exceed max_seq_len: the prompt keeps its last "
        "max_prompt_len tokens (more if the response is short), the response the rest; "
        "0 = max_seq_len // 2"
    )
    min_prompt_len: int = _knob(4, "an example whose cut prompt would keep fewer tokens is "
                                "dropped and counted (dropped_examples)")
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
        if not 0 <= self.max_prompt_len < self.max_seq_len:
            raise ConfigError(f"`max_prompt_len` must be in [0, max_seq_len), got "
                              f"{self.max_prompt_len}")
        if not 1 <= self.min_prompt_len < self.max_seq_len:
            raise ConfigError(f"`min_prompt_len` must be in [1, max_seq_len), got "
                              f"{self.min_prompt_len}")
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
    metrics: list = _knob(
        [], "metrics on greedy generations (eval_<name> columns): exact_match, rouge_l, an "
        "'ecolora.metrics' entry point or module:function; empty = auto (rouge_l for SFT on a "
        "data file without answer extraction), none = off"
    )
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
        if not all(isinstance(m, str) and m for m in self.metrics):
            raise ConfigError("`metrics` must be a list of non-empty metric names")
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
    lr: float = _knob(1e-2, "client AdamW learning rate (objective sft; dpo uses fed.dpo_lr)")
    dpo_lr: float = _knob(1e-3, "client AdamW learning rate when objective=dpo (its own default: "
                          "SFT's 1e-2 makes the eval DPO loss rise); 0 = use fed.lr")
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
        _check_range("dpo_lr", self.dpo_lr, 0.0, 10.0)
        if self.checkpoint_every < 0:
            raise ConfigError(f"`checkpoint_every` must be >= 0, got {self.checkpoint_every}")
        if not 0 <= self.seed <= MAX_SEED:  # numpy/torch seeds; seed + offsets must still fit
            raise ConfigError(f"`seed` must be in [0, {MAX_SEED}], got {self.seed}")

    @property
    def client_lr(self) -> float:
        """The client learning rate of this run's objective: DPO has its own (fed.dpo_lr)."""
        return self.dpo_lr if self.objective == "dpo" and self.dpo_lr > 0 else self.lr


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
        # a floor, not just > 0: a subnormal rate makes the modeled time overflow to Infinity
        _check_range("uplink_mbps", self.uplink_mbps, MIN_MBPS, 1e6)
        _check_range("downlink_mbps", self.downlink_mbps, MIN_MBPS, 1e6)
        _check_range("latency_ms", self.latency_ms, 0.0, 1e6)
