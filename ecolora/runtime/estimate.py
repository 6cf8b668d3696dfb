"""The paper's scale on paper: exact bytes and modeled time of a federated run, not trained.

Why: the bundled models are tiny, so their runs say little about what EcoLoRA saves on the
paper's LLaMA-2-7B, where payloads are megabytes and compute is seconds per step. Bytes depend
on the adapter's *layout* (tensor shapes, from a weightless meta-device model), on the method's
knobs and on where the kept entries fall, not on what the model learned; so every payload here
is really encoded by the method object (``Method.client_update``, ``encode_broadcast``,
``encode_full_state``), from a seeded Gaussian delta whose top-k positions are uniform, which
is what Golomb coding of real top-k masks costs (docs/codec.md).

What is counted, as ``runtime/driver.py`` counts a real run: each round, every sampled client
uploads its segment (k + t) mod S; a client that trained last round downloads last round's
broadcast delta, any other (everyone in round 0) the full fp32 adapter. Rounds whose kept counts
differ (a density warm-up) are encoded separately. The broadcast delta of a round is nonzero on
the union of the kept entries of its senders, drawn as independent uniform sets: real clients'
top-k entries overlap more, so this bounds the union from above (the independent-clients
bound). Time follows spec §9 (``../shared/spec/ecolora-paper.md``): T_total = sum over rounds of
(slowest client's compute + T_comm(t)), T_comm by ``runtime/network.round_comm_s``, compute =
local_steps * step_s for every client.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ecolora.compress.layout import AdapterLayout
from ecolora.compress.segments import segment_for
from ecolora.compress.sparsify import piece_budgets
from ecolora.config import ModelConfig, RunConfig, merge
from ecolora.errors import ConfigError, ModelError
from ecolora.methods import Method, ServerState, build_method
from ecolora.runtime.network import round_comm_s

DELTA_STD = 0.01  # fp16 exponents of a Gaussian compress alike at any scale well inside fp16's
# normal range (>= 6.1e-5); at std 0.01 only 0.5% of entries fall below it
SEED = 0
Progress = Callable[[int, int, str], None]  # (done, total, what) after each encode


@dataclass
class RoundCost:
    round: int  # 1-based, as in metrics.jsonl
    up: list[int]  # bytes per sampled client
    down: list[int]
    comm_s: float
    compute_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "clients": len(self.up), "upload_bytes": sum(self.up),
                "upload_bytes_max": max(self.up), "download_bytes": sum(self.down),
                "download_bytes_max": max(self.down), "comm_s": self.comm_s,
                "compute_s": self.compute_s}


@dataclass
class MethodEstimate:
    label: str
    compress: dict[str, Any]  # the method's effective knobs (its variant's overrides applied)
    upload_client: list[int]  # last round's bytes per segment: one client's upload
    broadcast: int  # the last broadcast delta a client downloads (0: never downloaded)
    full_state: int  # round 0's full adapter
    rounds: list[RoundCost]

    @property
    def totals(self) -> dict[str, float]:
        comm = sum(r.comm_s for r in self.rounds)
        compute = sum(r.compute_s for r in self.rounds)
        return {"upload_bytes": sum(sum(r.up) for r in self.rounds),
                "download_bytes": sum(sum(r.down) for r in self.rounds),
                "comm_s": comm, "compute_s": compute, "total_s": comm + compute}

    def to_dict(self, reference: MethodEstimate) -> dict[str, Any]:
        mine, ref = self.totals, reference.totals
        return {"method": self.label, "compress": self.compress,
                "upload_client_bytes": self.upload_client,
                "upload_round_bytes": sum(self.rounds[-1].up),
                "broadcast_bytes": self.broadcast, "full_state_bytes": self.full_state,
                "download_round_bytes": sum(self.rounds[-1].down), **mine,
                "share_of_fedit": {k: mine[k] / ref[k] if ref[k] else None for k in mine},
                "rounds": [r.to_dict() for r in self.rounds]}


# ---- the model: layout from a weightless config, and an optional measured step ---------------
def _quiet() -> None:
    from ecolora.train.model import quiet_hf

    quiet_hf()
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")  # meta-device notes


def load_config(name: str):
    """A transformers config from a config.json file, a folder holding one, the bundled bases,
    or a hub name. Local files are read here so a bad file is one clear line, not a traceback."""
    from transformers import AutoConfig

    from ecolora.train.model import resolve_model_path

    _quiet()
    path = Path(name).expanduser()
    if not path.is_file():
        if not path.exists() and (name.endswith(".json") or name.startswith((".", "/", "~"))):
            raise ModelError(f"model config not found: {name}")
        resolved = resolve_model_path(name)  # checks a folder's config.json
        path = Path(resolved) / "config.json"
        if not path.is_file():  # a hub name
            try:
                return AutoConfig.from_pretrained(resolved)
            except (OSError, ValueError) as exc:
                raise ModelError(f"cannot load the config of {name!r} (hub name, no network?): "
                                 f"{str(exc).strip().splitlines()[0][:200]}") from None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        raise ModelError(f"{path}: a model config must be a JSON object with a model_type")
    try:
        return AutoConfig.for_model(raw.pop("model_type"), **raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path}: {str(exc).strip().splitlines()[0][:200]}") from None


def build_lora(config, cfg: ModelConfig, meta: bool = True):
    """``config``'s causal LM with LoRA attached as ``train/model.load_model`` attaches it:
    on the meta device (shapes only, no memory) or with random weights on ``cfg.device``."""
    import torch
    from transformers import AutoModelForCausalLM

    from ecolora.train.model import DTYPES, attach_lora, resolve_device

    _quiet()
    try:
        if meta:  # LoRA too: peft would otherwise initialize it in real memory first
            with torch.device("meta"):
                return attach_lora(AutoModelForCausalLM.from_config(config), cfg)
        torch.manual_seed(SEED)
        base = AutoModelForCausalLM.from_config(config, dtype=DTYPES[cfg.precision])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelError(f"cannot build {cfg.name!r} as a causal LM: "
                         f"{str(exc).strip().splitlines()[0][:200]}") from None
    return attach_lora(base, cfg).to(resolve_device(cfg.device))


def available_bytes(device: str) -> int:
    """Free memory of ``device``: the GPU's (cuda), or MemAvailable of this machine."""
    import torch

    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")  # pragma: no cover


def measure_step_s(config, cfg: ModelConfig, batch_size: int, params: int) -> float:
    """Seconds of one forward+backward at ``batch_size`` x ``model.max_seq_len`` random tokens:
    after a warm-up (allocation, kernel selection), the faster of two, as another process
    holding a core can stall one pass for seconds (README, threads). ``model.threads`` > 0
    sets torch's CPU threads. Refused when the fp32 weights would take more than half the free
    memory: a swapping machine times nothing."""
    import torch

    from ecolora.train.model import resolve_device

    device = resolve_device(cfg.device).type  # a GPU model is built in RAM first
    need, free = 4 * params, min(available_bytes("cpu"), available_bytes(device))
    if need > free / 2:
        raise ModelError(f"--measure-step: the model's fp32 weights ({need / 1e9:.1f} GB) exceed "
                         f"half the free memory ({free / 1e9:.1f} GB); give --step-s instead")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = build_lora(config, cfg, meta=False)
    model.train()
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (batch_size, cfg.max_seq_len), device=model.device)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return min(times[1:])


# ---- the payloads -------------------------------------------------------------------------
def gaussian_delta(layout: AdapterLayout, seed: int = SEED) -> list[np.ndarray]:
    """One seeded N(0, DELTA_STD^2) update for every LoRA tensor."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(t.numel, dtype=np.float32) * np.float32(DELTA_STD)
            for t in layout.tensors]


def initial_params(layout: AdapterLayout, trained: bool) -> list[np.ndarray]:
    """The global adapter as a full-state download sees it: A as peft initializes it (Kaiming
    uniform, bound 1/sqrt(fan_in)), B zero in round 0 (``trained=False``), Gaussian later."""
    rng = np.random.default_rng(SEED + 1)
    out = []
    for t in layout.tensors:
        if t.kind == "A":
            bound = 1.0 / np.sqrt(t.shape[-1])
            out.append(rng.uniform(-bound, bound, t.numel).astype(np.float32))
        elif trained:
            out.append(rng.standard_normal(t.numel, dtype=np.float32) * np.float32(DELTA_STD))
        else:
            out.append(np.zeros(t.numel, dtype=np.float32))
    return out


class Encoder:
    """One method's payload sizes, each distinct payload encoded once and remembered."""

    def __init__(self, method: Method, delta: list[np.ndarray]) -> None:
        self.method, self.delta = method, delta
        self.uploads: dict[tuple, tuple[int, list[int]]] = {}
        self.broadcasts: dict[tuple, int] = {}
        self.keys: dict[tuple[int, int], tuple] = {}

    def upload_key(self, seg: int, round_: int) -> tuple:
        """Payloads with the same segment and kept counts have the same size: the header's
        round is fixed width, the values are the same."""
        if (seg, round_) not in self.keys:
            m = self.method
            pieces = m.segments[seg]
            values = [self.delta[p.tensor][p.start : p.stop] for p in pieces]
            budgets = piece_budgets(values, pieces, m.layout, round_, m.cfg)
            self.keys[seg, round_] = seg, tuple(budgets)
        return self.keys[seg, round_]

    def upload(self, seg: int, round_: int) -> tuple[int, list[int]]:
        """(bytes, kept entries per piece) of a client upload of ``seg`` in ``round_``."""
        key = self.upload_key(seg, round_)
        if key not in self.uploads:
            m = self.method
            client = (seg - round_) % m.cfg.num_segments  # one whose segment is ``seg``
            up = m.client_update(self.delta, None, client, round_)
            _, _, got = m.decode_update(up.payload, client, round_, 1.0)
            self.uploads[key] = len(up.payload), [p.size if i is None else len(i)
                                                  for p, i, _ in got]
        return self.uploads[key]

    def broadcast_key(self, senders: list[tuple[int, int]], round_: int) -> tuple:
        """Senders as (segment, kept counts): the union of their entries sets the broadcast."""
        return tuple(sorted(self.upload_key(seg, round_) for _, seg in senders))

    def broadcast(self, senders: list[tuple[int, int]], round_: int) -> int:
        key = self.broadcast_key(senders, round_)
        if key not in self.broadcasts:
            delta = self._aggregate([seg for _, seg in senders], round_)
            self.broadcasts[key] = len(self.method.encode_broadcast(delta, round_,
                                                                    ServerState()))
        return self.broadcasts[key]

    def _aggregate(self, segs: list[int], round_: int) -> list[np.ndarray]:
        """A global change nonzero on the union of the senders' kept entries, each sender's drawn
        uniformly and independently. Dense when the server's step spreads it (momentum, Adam)
        or the broadcast is top-k'd anyway (compress_download: its residual is dense)."""
        m = self.method
        if m.cfg.server_opt != "sgd" or m.cfg.compress_download:
            return self.delta
        rng = np.random.default_rng(SEED + 2)
        out = [np.zeros_like(d) for d in self.delta]
        for seg in sorted(set(segs)):
            senders = segs.count(seg)
            for p, kept in zip(m.segments[seg], self.upload(seg, round_)[1], strict=True):
                union = 0
                for _ in range(senders):  # entries a sender adds to the union so far
                    union += rng.hypergeometric(p.size - union, union, kept) if union else kept
                if union == p.size:
                    out[p.tensor][p.start : p.stop] = self.delta[p.tensor][p.start : p.stop]
                    continue
                pos = p.start + rng.choice(p.size, union, replace=False)
                out[p.tensor][pos] = self.delta[p.tensor][pos]
        return out


# ---- the run ------------------------------------------------------------------------------
def estimate(layout: AdapterLayout, cfg: RunConfig, labels: list[str], step_s: float,
             progress: Progress | None = None) -> list[MethodEstimate]:
    """Every round of every method in ``labels`` (``fedit`` is computed as the reference for
    the shares when absent; it is then last in the list), as ``runtime/driver.py`` runs it."""
    from ecolora.runtime.batch import parse_label
    from ecolora.runtime.driver import sample_clients

    check_step_s(step_s)
    fed = cfg.fed
    names = list(labels) + ([] if "fedit" in labels else ["fedit"])
    methods = []
    for label in names:
        name, over = parse_label(label)
        methods.append(build_method(name, merge(cfg, over).method_compress, layout))
    sampled = [sample_clients(fed.seed, t, fed.clients, fed.participation)
               for t in range(fed.rounds)]
    delta = gaussian_delta(layout)
    encoders = [Encoder(m, delta) for m in methods]
    plans = [_plan(e, sampled) for e in encoders]
    rejoin = any(p[2] for p in plans)  # a client back from missed rounds: the trained adapter

    def full_state(trained: bool) -> int:
        return len(methods[0].encode_full_state(initial_params(layout, trained), int(trained)))

    jobs = [("full state", partial(full_state, False))]
    jobs += [("full state (trained)", partial(full_state, True))] if rejoin else []
    for label, enc, (ups, downs, _) in zip(names, encoders, plans, strict=True):
        jobs += [(f"{label} upload", partial(enc.upload, *u)) for u in ups]
        jobs += [(f"{label} broadcast", partial(enc.broadcast, *d)) for d in downs]
    sizes = []
    for i, (what, job) in enumerate(jobs, 1):
        sizes.append(job())
        if progress:
            progress(i, len(jobs), what)
    later = sizes[1] if rejoin else None
    return [_rounds(label, enc, sampled, sizes[0], later, cfg, step_s)
            for label, enc in zip(names, encoders, strict=True)]


def check_step_s(step_s: float) -> None:
    if not step_s > 0:  # NaN too
        raise ConfigError(f"--step-s must be > 0 seconds, got {step_s}")


def _senders(method: Method, clients: list[int], round_: int) -> list[tuple[int, int]]:
    return [(k, segment_for(k, round_, method.cfg.num_segments)) for k in clients]


def _plan(enc: Encoder, sampled: list[list[int]]) -> tuple[list, list, bool]:
    """Distinct uploads and downloaded broadcasts to encode, and whether any client downloads
    the trained full state (a sampled client that missed the previous round)."""
    ups, downs, seen_up, seen_down, rejoin = [], [], set(), set(), False
    for t, clients in enumerate(sampled):
        senders = _senders(enc.method, clients, t)
        for _, seg in senders:
            if (key := enc.upload_key(seg, t)) not in seen_up:
                seen_up.add(key)
                ups.append((seg, t))
        if t > 0:
            rejoin |= any(k not in sampled[t - 1] for k in clients)
        if t + 1 < len(sampled) and set(clients) & set(sampled[t + 1]):
            if (key := enc.broadcast_key(senders, t)) not in seen_down:
                seen_down.add(key)
                downs.append((senders, t))
    return ups, downs, rejoin


def _rounds(label: str, enc: Encoder, sampled: list[list[int]], full0: int, later: int | None,
            cfg: RunConfig, step_s: float) -> MethodEstimate:
    """Per round: uploads, downloads (runtime/driver.py's RoundPlan) and the modeled times."""
    m, rows, last_down = enc.method, [], 0
    compute = cfg.fed.local_steps * step_s
    for t, clients in enumerate(sampled):
        up = [enc.upload(seg, t)[0] for _, seg in _senders(m, clients, t)]
        prev = sampled[t - 1] if t else []
        if t and set(prev) & set(clients):
            last_down = enc.broadcast(_senders(m, prev, t - 1), t - 1)
        full = full0 if t == 0 else later
        down = [last_down if k in prev else full for k in clients]
        rows.append(RoundCost(t + 1, up, down, round_comm_s(up, down, cfg.network), compute))
    last = sampled[-1]
    up_client = [enc.upload(s, len(sampled) - 1)[0]
                 for s in sorted({s for _, s in _senders(m, last, len(sampled) - 1)})]
    return MethodEstimate(label, asdict(m.cfg), up_client, last_down, full0, rows)


def to_json(results: list[MethodEstimate], meta: dict[str, Any]) -> dict[str, Any]:
    """The numbers ``--json`` writes: the setting, then each method with its shares of FedIT's."""
    ref = next(r for r in results if r.label == "fedit")
    return {**meta, "methods": [r.to_dict(ref) for r in results]}
