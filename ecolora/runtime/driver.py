"""The server side of a federated run, written once for every runtime (spec §7 loop).

Why one driver: the in-process simulator and the Flower ServerApp must give the same numbers
for the same seed, so everything that decides them lives here and nowhere else: who is sampled,
who downloads the full global adapter and who the last broadcast delta, the server step, the
evaluation cadence, the round row, checkpoints and the per-client state the server keeps.

A runtime only moves bytes. It gets a ``RoundPlan`` (sampled clients, what each downloads),
delivers it however it can (a function call, Flower messages), and hands back a ``Delivery``:
the replies, plus clients it could not reach (``dropped``) or whose reply it could not parse
(``rejected``). ``RoundDriver.run`` then aggregates, evaluates, writes the row and calls the
observers: ``on_round(row_dict)`` after every round and ``on_checkpoint(SimState)`` after every
round (``runtime/checkpoint.py`` decides when to save).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecolora.runtime.checkpoint import SimState
from ecolora.runtime.evaluation import emit_samples, evaluate_global
from ecolora.runtime.network import round_comm_s
from ecolora.runtime.rounds import server_round
from ecolora.runtime.setup import RunSetup

Params = list[np.ndarray]


def sample_clients(seed: int, round_: int, num_clients: int, fraction: float) -> list[int]:
    """Clients of round ``round_``, sorted; depends on (seed, round) only."""
    m = max(1, round(fraction * num_clients))
    if m >= num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng([seed, 1_000_003, round_])
    return sorted(rng.choice(num_clients, size=m, replace=False).tolist())


def is_eval_round(round_: int, eval_every: int, rounds: int) -> bool:
    """Round ``round_`` (1-based) is evaluated every ``eval_every`` rounds and at the end."""
    return round_ % eval_every == 0 or round_ == rounds


@dataclass
class ClientReply:
    """What one client sent back. ``state`` is set by runtimes whose client state the server
    holds (the simulator): (error-feedback residual, local tensors) to keep for next time."""

    client: int
    payload: bytes
    loss: float
    nonzeros: int
    compute_s: float
    state: tuple[Params | None, Params | None] | None = None


@dataclass
class Delivery:
    """A runtime's account of one round: replies, and the clients that are not in them."""

    replies: list[ClientReply]
    rejected: dict[int, str] = field(default_factory=dict)  # unreadable reply: client -> why
    dropped: dict[int, str] = field(default_factory=dict)  # no reply: client -> why


@dataclass
class RoundPlan:
    """Round ``round`` as the server decided it: who trains and what each one downloads."""

    round: int
    clients: list[int]
    delta: dict[int, bool]  # True: the client holds round t-1's global and gets the broadcast
    full_state: bytes | None  # the encoded global adapter, made only when someone needs it
    broadcast: bytes | None  # the last broadcast delta (None in a resumed simulator run)
    broadcast_len: int
    unreachable: dict[int, str] = field(default_factory=dict)  # skipped before sending

    def download(self, client: int) -> bytes:
        """The bytes ``client`` must receive: the last broadcast delta or the full state."""
        payload = self.broadcast if self.delta[client] else self.full_state
        if payload is None:  # pragma: no cover - the driver always keeps what it plans
            raise RuntimeError(f"round {self.round}: no download for client {client}")
        return payload

    def download_len(self, client: int) -> int:
        return self.broadcast_len if self.delta[client] else len(self.full_state or b"")

    def skip(self, client: int, reason: str) -> None:
        """Nothing is sent to ``client`` (e.g. no node holds it); it counts as dropped."""
        self.unreachable[client] = reason


@dataclass
class RoundRow:
    """One line of ``metrics.jsonl``; ``to_dict`` keeps the historical key order."""

    round: int
    method: str
    clients: int
    train_loss: float | None
    upload_bytes: int
    upload_nonzeros: int
    download_bytes: int
    upload_bytes_max: int  # the slowest transfer sets the round's comm time
    download_bytes_max: int
    compute_s: float  # slowest client, measured
    comm_s: float  # modeled
    rejected: dict[int, str]
    dropped: dict[int, str]
    wall_s: float | None = None  # server wall time of the round (runtimes that time rounds)
    eval: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "round": self.round, "method": self.method, "clients": self.clients,
            "train_loss": self.train_loss, "upload_bytes": self.upload_bytes,
            "upload_nonzeros": self.upload_nonzeros, "download_bytes": self.download_bytes,
            "upload_bytes_max": self.upload_bytes_max,
            "download_bytes_max": self.download_bytes_max, "compute_s": self.compute_s,
            "comm_s": self.comm_s, "rejected": self.rejected,
        }
        if self.dropped:  # only runtimes that can lose a client ever fill it
            row["dropped"] = self.dropped
        row.update(self.eval)
        if self.wall_s is not None:
            row["wall_s"] = self.wall_s
        return row


PersonalEval = Callable[[Params], dict[str, float]]


class RoundDriver:
    """Owns the global adapter, sync bookkeeping, last broadcast, ``ServerState`` and the
    state kept per client (residuals, FedSA's local tensors) of one run."""

    def __init__(self, setup: RunSetup, resume: SimState | None = None) -> None:
        from ecolora.train.model import get_params

        self.setup = setup
        if resume is None:
            params = get_params(setup.model)
            resume = SimState(0, params, evaluate_global(setup, params, 0))
        self.state = resume
        self.broadcast: bytes | None = b"" if resume.round == 0 else None

    @property
    def params(self) -> Params:
        return self.state.params

    def client_state(self, client: int) -> tuple[Params | None, Params | None, int | None]:
        """(residual, local tensors, last round trained) the server holds for ``client``."""
        s = self.state
        return s.residuals.get(client), s.local.get(client), s.synced.get(client)

    def forget_sync(self) -> None:
        """Every client gets the full state next time (its runtime lost what it held)."""
        self.state.synced.clear()

    def plan(self, t: int) -> RoundPlan:
        cfg, s = self.setup.cfg, self.state
        sampled = sample_clients(cfg.fed.seed, t, cfg.fed.clients, cfg.fed.participation)
        delta = {k: t > 0 and s.synced.get(k) == t - 1 for k in sampled}
        if delta and not all(delta.values()):
            full = self.setup.method.encode_full_state(s.params, t)
        else:
            full = None
        return RoundPlan(t, sampled, delta, full, self.broadcast, s.last_broadcast)

    def finish(self, plan: RoundPlan, got: Delivery,
               personal_eval: PersonalEval | None = None) -> RoundRow:
        """Aggregate the replies (in client order), update the state, evaluate; the row."""
        cfg, s, method = self.setup.cfg, self.state, self.setup.method
        t = plan.round
        replies = sorted(got.replies, key=lambda r: r.client)
        for r in replies:
            if r.state is not None:
                s.residuals[r.client], s.local[r.client] = r.state
        uploads = [(r.client, r.payload, self.setup.weights[r.client]) for r in replies]
        srv = server_round(method, uploads, t, s.server, s.params)
        s.params, self.broadcast, s.last_broadcast = srv.params, srv.broadcast, len(srv.broadcast)
        dropped = {**got.dropped, **plan.unreachable}
        for k in plan.clients:  # a client that answered holds this round's global
            if k in dropped:
                s.synced.pop(k, None)
            else:
                s.synced[k] = t
        sent = [k for k in plan.clients if k not in plan.unreachable]
        down = [plan.download_len(k) for k in sent]
        up = [len(r.payload) for r in replies]
        row = RoundRow(
            round=t + 1, method=cfg.method, clients=len(replies),
            train_loss=float(np.mean([r.loss for r in replies])) if replies else None,
            upload_bytes=int(sum(up)), upload_nonzeros=int(sum(r.nonzeros for r in replies)),
            download_bytes=int(sum(down)), upload_bytes_max=max(up, default=0),
            download_bytes_max=max(down, default=0),
            compute_s=max((r.compute_s for r in replies), default=0.0),
            comm_s=round_comm_s(up, down, cfg.network),
            rejected={**got.rejected, **srv.rejected}, dropped=dropped,
        )
        if is_eval_round(t + 1, cfg.fed.eval_every, cfg.fed.rounds):
            if method.local:  # personalized: every client's own model, then the mean
                if personal_eval is None:
                    raise ValueError(f"{cfg.method} keeps local tensors: pass personal_eval")
                row.eval = personal_eval(s.params)
                emit_samples(self.setup, s.params, t + 1)
            else:
                row.eval = evaluate_global(self.setup, method.server_model(s.params, s.server),
                                           t + 1)
        return row

    def run(self, deliver: Callable[[RoundPlan], Delivery],
            personal_eval: PersonalEval | None = None,
            on_round: Callable[[dict], None] | None = None,
            on_checkpoint: Callable[[SimState], None] | None = None,
            timed: bool = False) -> dict:
        """Every remaining round; returns {"rounds": rows, "initial": ..., "params": global}.

        ``timed`` adds the round's wall time as ``wall_s`` to each row (the simulator's rows
        leave it out, so they stay byte-for-byte reproducible apart from ``compute_s``).
        """
        s = self.state
        for t in range(s.round, self.setup.cfg.fed.rounds):
            t0 = time.perf_counter()
            plan = self.plan(t)
            row = self.finish(plan, deliver(plan), personal_eval)
            if timed:
                row.wall_s = time.perf_counter() - t0
            out = row.to_dict()
            s.rows.append(out)
            s.round = t + 1
            if on_round:
                on_round(out)
            if on_checkpoint:
                on_checkpoint(SimState(s.round, s.params, s.initial, s.rows, s.residuals,
                                       s.local, s.synced, s.last_broadcast, s.server))
        return {"rounds": s.rows, "initial": s.initial,
                "params": self.setup.method.server_model(s.params, s.server)}
