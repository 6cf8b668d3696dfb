"""One method object serves every runtime: what a client sends, how the server merges it.

``Method`` is configured by a ``CompressConfig`` and the model's ``AdapterLayout``; it never
touches torch, files or sockets. A runtime (in-process simulation, Flower) calls, per round:

    client:  payload, residual = method.client_update(delta, residual, client, round)
    server:  update = method.decode_update(payload, client, round)   # untrusted bytes
             delta  = method.aggregate(updates, server_state)
             down   = method.encode_broadcast(delta, round, server_state)
    all:     params = method.apply_broadcast(down, params)

FedIT is the same object with one segment, density 1 and no error feedback (its preset in
``methods/__init__.py``), so both go through identical framing and value dtype: a fair count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ecolora.compress import quant, wire
from ecolora.compress.layout import AdapterLayout
from ecolora.compress.segments import Piece, make_segments, segment_for
from ecolora.compress.sparsify import DENSE_BITS, keep_count, sparsify, topk_indices
from ecolora.config import CompressConfig
from ecolora.errors import ConfigError, CorruptPayloadError
from ecolora.methods import rawpos
from ecolora.methods.aggregate import Update, aggregate_segments, sent_entries
from ecolora.methods.memory import SegmentMemory, with_memory
from ecolora.methods.server_opt import server_step
from ecolora.methods.variants import VARIANTS, Variant

Params = list[np.ndarray]  # flat float32 arrays in layout order


@dataclass
class ClientUpload:
    payload: bytes
    residual: Params | None
    nonzeros: int
    segment: int


@dataclass
class ServerState:
    """Server-side memory: the download residual when the broadcast is sparsified, and the
    server optimizer's moments (``methods/server_opt.py``)."""

    residual: Params | None = None
    opt_m: Params | None = None
    opt_v: Params | None = None
    opt_step: int = 0
    memory: SegmentMemory | None = None


class Method:
    def __init__(self, name: str, cfg: CompressConfig, layout: AdapterLayout,
                 variant: Variant | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.layout = layout
        self.variant = variant or VARIANTS["ecolora"]
        kinds = [t.kind for t in layout.tensors]
        share, train = self.variant.share, self.variant.train
        self.shared = [i for i, k in enumerate(kinds) if k in share]
        self.trainable = [k in train for k in kinds]
        self.local = [i for i, k in enumerate(kinds) if k in train and k not in share]
        self.shapes = [t.numel for t in layout.tensors]
        self.segments = shared_segments(layout, self.shared, cfg.num_segments, cfg.segment_by)
        # uploads: 16-bit values (format v2) or q8/q4 codes with a per-record scale (v3)
        self.upload_dtype = wire_dtype(cfg)
        # a budgeted lossy broadcast is the upload's budgeted top-k over one segment that
        # holds every shared tensor, pooled, with its own budget and bits
        self.down_cfg = replace(cfg, upload_budget=cfg.download_budget,
                                value_bits=cfg.download_bits, topk_scope="per_segment",
                                rho_a=1.0, rho_b=1.0, value_rounding="nearest")
        self.down_pieces = tuple(Piece(i, 0, self.shapes[i]) for i in self.shared)
        if cfg.value_bits != 16 and self.variant.positions == "int32":
            raise ConfigError(f"method {name} sends raw int32 positions; value_bits="
                              f"{cfg.value_bits} needs the ECLR format (value_bits=16)")

    # ---- what each client trains and keeps (FFA-LoRA freezes A, FedSA-LoRA keeps B) ---------
    @property
    def trainable_mask(self) -> list[bool] | None:
        """Per layout tensor, whether local training updates it; None when all are trained."""
        return None if all(self.trainable) else list(self.trainable)

    def client_start(self, global_params: Params, local: Params | None) -> Params:
        """The point a client trains from: the global adapter with its own local tensors."""
        if not self.local or local is None:
            return global_params
        out = list(global_params)
        for i, value in zip(self.local, local, strict=True):
            out[i] = value
        return out

    def keep_local(self, trained: Params) -> Params | None:
        """Copies of the tensors this client keeps for itself (None for methods that share all)."""
        return [trained[i].copy() for i in self.local] if self.local else None

    def _encode(self, payload: wire.Payload) -> bytes:
        if self.variant.positions == "int32":
            return rawpos.encode(payload, self.variant.pack_values)
        return wire.encode(payload, self.cfg.golomb_param)

    def _decode(self, buf: bytes) -> wire.Payload:
        if self.variant.positions == "int32":
            return rawpos.decode(buf, self.cfg.max_tensor_numel, len(self.layout))
        return wire.decode(buf, self.cfg.max_tensor_numel, max_records=len(self.layout))

    # ---- client side -------------------------------------------------------------------
    def client_update(
        self, delta: Params, residual: Params | None, client: int, round_: int,
        missed: int = 0,
    ) -> ClientUpload:
        """Segment choice, error feedback, top-k and encoding of one client's local delta.

        ``missed`` is how many rounds passed without this client since its residual was made
        (partial participation; spec §5.4 leaves it open, ``stale_decay`` is ours). The
        residual then holds deltas computed from a global model that has moved on, and
        re-sending them acts like a stale gradient (measured in the README). So it is scaled
        by ``stale_decay ** missed``, and with ``stale_clip`` further down to at most that
        multiple of the fresh delta's norm; under full participation nobody misses a round.

        Unsent segments (``residual_scope``, spec §5.4): each segment's mean is over the K/S
        clients that sent it, so a client's upload counts S times as much as under FedIT.
        ``all_untransmitted`` keeps the unsent segments' deltas and sends S rounds of them at
        once: the global step is S times FedIT's (the S=4 collapse). ``sparsified_only``
        drops them: segment sharing is then per-segment client sampling, unbiased, but each
        round uses 1/S of every client's training. ``segment_mean`` keeps them at 1/S, so a
        segment carries the client's mean delta since it last sent it: FedIT's step size, and
        no client's training is lost.
        """
        cfg = self.cfg
        seg = segment_for(client, round_, cfg.num_segments)
        pieces = self.segments[seg]
        use_ef = cfg.error_feedback
        if use_ef:
            old = residual if residual is not None else [np.zeros_like(d) for d in delta]
            decay = cfg.residual_decay * cfg.stale_decay**missed
            if cfg.scope == "segment_mean":  # every delta enters at 1/S (see above)
                delta = [d * np.float32(1.0 / cfg.num_segments) for d in delta]
            if missed and cfg.stale_clip > 0 and decay > 0:
                decay *= stale_clip_factor(old, delta, decay, cfg.stale_clip)
            acc = [decay * r + d for r, d in zip(old, delta, strict=True)]
        else:
            acc = delta
        values = [acc[p.tensor][p.start : p.stop] for p in pieces]
        payload, kept, received = self._encode_within_budget(
            values, pieces, round_, self.cfg, wire.KIND_UPDATE, seg, client)
        new_res = None
        if use_ef:
            if cfg.scope != "sparsified_only":
                new_res = [a.copy() for a in acc]
            else:  # sparsified_only: unsent segments keep their old (decayed) residual
                new_res = [decay * r for r in old]
            for p, v, idx, got in zip(pieces, values, kept, received, strict=True):
                target = new_res[p.tensor][p.start : p.stop]
                target[:] = v
                _subtract_sent(target, idx, got)
        nonzeros = sum(g.size for g in received)
        return ClientUpload(payload, new_res, nonzeros, seg)

    def _encode_within_budget(self, values: Params, pieces, round_: int, cfg: CompressConfig,
                              kind: int, seg: int, client: int):
        """Top-k, value coding and framing of one segment: (payload, kept indices, values the
        receiver decodes). With a bytes budget (``cfg.upload_budget``; the broadcast's
        ``down_cfg`` carries ``download_budget`` there) the kept count is the estimate of
        ``budget_count``; record headers, per-record scales and clustered positions can exceed it
        (8/4-bit values most), so a payload over the budget is made again with the count
        scaled by the overshoot: the budget is a cap on the bytes actually sent. Raw int32
        positions (eco-no-golomb, topk-ef) keep the count: they exist to show what the same
        entries cost without Golomb coding."""
        raw = self.variant.positions == "int32"
        dtype = wire_dtype(cfg)
        allowed = cfg.upload_budget * DENSE_BITS * self.layout.numel / 8 + wire.FRAME_BYTES
        shrink = 1.0
        for _ in range(8):
            kept = sparsify(values, pieces, self.layout, round_, cfg, shrink)
            records, received = [], []
            for p, v, idx in zip(pieces, values, kept, strict=True):
                sent = v if idx is None else v[idx]
                got, scale = self._round_trip(sent, dtype, cfg.value_rounding, client, round_, p)
                records.append(wire.Record(p.tensor, p.start, p.size,
                                           sent if scale is None else got, idx, scale))
                received.append(got)
            payload = self._encode(wire.Payload(kind, round_, seg, dtype, records))
            if not cfg.upload_budget or len(payload) <= allowed or raw or \
                    sum(g.size for g in received) <= len(pieces):
                break
            shrink *= 0.98 * allowed / len(payload)
        return payload, kept, received

    @staticmethod
    def _round_trip(sent: np.ndarray, dtype: str, rounding: str, client: int, round_: int,
                    p) -> tuple[np.ndarray, float | None]:
        """What the receiver decodes for ``sent`` (and the q8/q4 scale it is sent with)."""
        if dtype not in quant.QMAX:
            return wire.round_trip_values(sent, dtype), None
        rng = None if rounding == "nearest" else \
            np.random.default_rng([round_, client, p.tensor, p.start])
        return quant.round_trip(sent, dtype, rng)

    # ---- server side -------------------------------------------------------------------
    def decode_update(self, payload: bytes, client: int, round_: int, weight: float) -> Update:
        """Decode untrusted bytes and check them against the layout and the expected segment."""
        msg = self._decode(payload)
        expected = segment_for(client, round_, self.cfg.num_segments)
        if msg.kind != wire.KIND_UPDATE:
            raise CorruptPayloadError("kind", 5, "not a client update")
        if msg.round != round_ or msg.segment != expected:
            raise CorruptPayloadError(
                "segment", 8, f"got round {msg.round} segment {msg.segment}, "
                f"expected round {round_} segment {expected}",
            )
        pieces = self.segments[expected]
        if len(msg.records) != len(pieces):
            raise CorruptPayloadError("count", 16, f"{len(msg.records)} records for "
                                      f"{len(pieces)} tensors of segment {expected}")
        out = []
        for p, r in zip(pieces, msg.records, strict=True):
            if (r.tensor, r.start, r.n) != (p.tensor, p.start, p.size):
                raise CorruptPayloadError("record", 20, f"range ({r.tensor}, {r.start}, {r.n}) "
                                          "is not the segment's")
            out.append((p, r.indices, r.values))
        return expected, weight, out

    def aggregate(self, updates: list[Update], state: ServerState,
                  clients: list[int] | None = None) -> Params:
        """The global change: the per-segment mean (spec §4.4), mixed with the server's memory
        of every client's latest segments (``segment_memory``, methods/memory.py), then the
        server optimizer. ``clients`` names each update's sender (needed by the memory)."""
        delta = aggregate_segments(updates, self.segments, self.shapes, self.cfg.normalize)
        if self.cfg.segment_memory > 0:
            if clients is None:
                raise ValueError("segment_memory needs the clients of the updates")
            if state.memory is None:
                state.memory = SegmentMemory()
            delta = with_memory(delta, state.memory, clients, updates, self.segments,
                                self.shapes, self.cfg.segment_memory)
        touched = sent_entries(updates, self.shapes) if self.cfg.server_opt == "adam" else None
        return server_step(delta, state, self.cfg, touched)

    def encode_broadcast(self, delta: Params, round_: int, state: ServerState) -> bytes:
        """The global change every client applies; sparse with server-side EF if configured
        (``compress_download``): under ``download_budget`` the upload's budgeted top-k and value
        coding over all shared tensors at once, else ``rho_down`` per tensor in fp16 (also
        for the int32-position baselines, as the classic top-k broadcast)."""
        cfg = self.cfg
        if not cfg.compress_download:
            # only shared tensors change globally: frozen or local ones are not broadcast
            records = [self._broadcast_record(i, delta[i]) for i in self.shared]
            return self._encode(wire.Payload(wire.KIND_BROADCAST, round_, wire.ALL_SEGMENTS,
                                             cfg.value_dtype, records))
        old = state.residual or [np.zeros_like(d) for d in delta]
        acc = state.residual = [r + d for r, d in zip(old, delta, strict=True)]
        if cfg.download_budget and self.variant.positions != "int32":
            values = [acc[p.tensor] for p in self.down_pieces]
            payload, kept, received = self._encode_within_budget(
                values, self.down_pieces, round_, self.down_cfg, wire.KIND_BROADCAST,
                wire.ALL_SEGMENTS, 0)
            for v, idx, got in zip(values, kept, received, strict=True):
                _subtract_sent(v, idx, got)
            return payload
        records = []
        for i in self.shared:
            a = acc[i]
            idx = topk_indices(a, keep_count(cfg.rho_down, a.size))
            sent = a[idx]
            records.append(wire.Record(i, 0, a.size, sent, idx))
            _subtract_sent(a, idx, wire.round_trip_values(sent, cfg.value_dtype))
        return self._encode(
            wire.Payload(wire.KIND_BROADCAST, round_, wire.ALL_SEGMENTS, cfg.value_dtype, records))

    def _broadcast_record(self, i: int, d: np.ndarray) -> wire.Record:
        """Dense, or with ``sparse_download`` only the entries the receiver would change.

        Lossless by construction: an entry left out is one whose 16-bit value is ±0, which the
        dense broadcast adds as ±0 and so does not change the global model either (a param
        -0.0 plus +0.0 would become +0.0, but sums only give -0.0 from -0.0 + -0.0, and LoRA
        starts from random A and +0 B). Sparse is used when its estimated size (value bits
        plus ~log2(n/k) + 2 position bits per entry) is below the dense size."""
        if not self.cfg.sparse_download:
            return wire.Record(i, 0, d.size, d)
        idx = np.flatnonzero(wire.round_trip_values(d, self.cfg.value_dtype))
        vbits = 32 if self.cfg.value_dtype == "fp32" else 16
        if _sparse_is_smaller(idx.size, d.size, vbits):
            return wire.Record(i, 0, d.size, d[idx], idx)
        return wire.Record(i, 0, d.size, d)

    def server_model(self, params: Params, state: ServerState) -> Params:
        """The model the server evaluates and saves (``compress.served_model``): the clients'
        copy ``params``, or the server's own model, which adds what lossy broadcasts have not
        sent yet (the server residual; EF21-P's x beside the clients' w). Every other broadcast
        leaves no residual, so both are ``params``."""
        if state.residual is None or self.cfg.served_model == "clients":
            return params
        return [p + r for p, r in zip(params, state.residual, strict=True)]

    def encode_full_state(self, params: Params, round_: int) -> bytes:
        """The whole global adapter in fp32: the first sync, or a client that missed rounds.

        A tensor whose nonzero bit patterns are few (LoRA's B starts at +0) is sent as those
        entries only; -0.0 counts as nonzero, so the receiver, which starts from +0, rebuilds
        every bit."""
        records = []
        for i, p in enumerate(params):
            idx = np.flatnonzero(p.view(np.uint32))
            if _sparse_is_smaller(idx.size, p.size, 32):
                records.append(wire.Record(i, 0, p.size, p[idx], idx))
            else:
                records.append(wire.Record(i, 0, p.size, p))
        return wire.encode(
            wire.Payload(wire.KIND_BROADCAST, round_, wire.ALL_SEGMENTS, "fp32", records)
        )

    def apply_broadcast(self, payload: bytes, params: Params, replace: bool = False) -> Params:
        """Decode a broadcast and add it to ``params`` (or replace them for a full state)."""
        # the full state is a wire frame for every method; int32 variants' deltas are rawpos
        raw = self.variant.positions == "int32" and payload[4:5] == bytes([rawpos.RAW_VERSION])
        # every payload of this method has at most one record per layout tensor (a segment's
        # pieces lie in distinct tensors): the cap that keeps huge valid payloads cheap (D1)
        msg = (rawpos if raw else wire).decode(payload, self.cfg.max_tensor_numel,
                                               max_records=len(self.layout))
        if msg.kind != wire.KIND_BROADCAST:
            raise CorruptPayloadError("kind", 5, "not a broadcast")
        out = [np.zeros_like(p) if replace else p.copy() for p in params]
        for r in msg.records:
            if r.tensor >= len(out) or r.start + r.n > out[r.tensor].size:
                raise CorruptPayloadError("record", 20, f"tensor {r.tensor} range out of bounds")
            view = out[r.tensor][r.start : r.start + r.n]
            if replace:  # assigned, not added to +0: a full state keeps every bit, -0.0 too
                view[slice(None) if r.indices is None else r.indices] = r.values
            elif r.indices is None:
                view += r.values
            else:
                view[r.indices] += r.values
        return out


def wire_dtype(cfg: CompressConfig) -> str:
    """The payload dtype of ``cfg``'s values: 16-bit ``value_dtype``, or the q8/q4 codes."""
    return cfg.value_dtype if cfg.value_bits == 16 else f"q{cfg.value_bits}"


def _sparse_is_smaller(k: int, n: int, vbits: int) -> bool:
    """Whether k of n entries cost less with positions (value bits plus about log2(n/k) + 2
    Rice bits each) than all n dense."""
    return k * (vbits + 2 + np.log2(n / max(k, 1))) < n * vbits


def _subtract_sent(acc: np.ndarray, idx: np.ndarray | None, got: np.ndarray) -> None:
    """Error feedback: take what the receiver decodes off the kept entries (all when dense)."""
    if idx is None:
        acc -= got
    else:
        acc[idx] -= got


def _norm(xs: Params) -> float:
    return float(np.sqrt(sum(float(np.dot(x, x)) for x in xs)))


def stale_clip_factor(residual: Params, delta: Params, decay: float, clip: float) -> float:
    """The factor (<= 1) that brings ``||decay * residual||`` down to ``clip * ||delta||``."""
    r, d = decay * _norm(residual), _norm(delta)
    return 1.0 if r <= clip * d else clip * d / r


def shared_segments(layout: AdapterLayout, shared: list[int], num_segments: int,
                    segment_by: str) -> list:
    """Segments (spec §4.1) over the shared tensors only, with pieces indexing ``layout``.

    FedIT and EcoLoRA share every tensor, which is ``make_segments`` unchanged; FFA-LoRA (B
    only) and FedSA-LoRA (A only) segment the sub-layout, so nothing unshared is ever sent.
    """
    if len(shared) == len(layout):
        return make_segments(layout, num_segments, segment_by)
    if not shared:
        raise ConfigError("this method shares no LoRA tensor of the model (no A/B tensors?)")
    sub = AdapterLayout(tuple(layout.tensors[i] for i in shared))
    return [tuple(replace(p, tensor=shared[p.tensor]) for p in seg)
            for seg in make_segments(sub, num_segments, segment_by)]
