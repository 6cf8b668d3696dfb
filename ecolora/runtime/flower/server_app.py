"""The Flower ServerApp: ``runtime/driver.py``'s rounds, with clients on SuperNodes.

Every decision (sampling, who downloads the delta and who the full state, aggregation, the
evaluation cadence, the row, checkpoints) is the driver's, exactly as for ``ecolora run``; this
file only moves the planned bytes to the nodes and their replies back:

* a node that errors or misses ``flower.round-timeout`` is dropped from that round (logged, in
  the row's ``dropped``) and resynced with the full state next time; a reply that cannot be
  read, or a payload the method refuses, is in ``rejected``. The round always closes;
* personalized methods (FedSA-LoRA) keep their local tensors on the nodes, so their eval rounds
  ask every node to evaluate its own model (an ``evaluate`` message) and average the replies;
* the run folder is written by ``runtime/outputs.py``, the same files as ``ecolora run``;
  ``flower.resume=true`` continues it from its checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context, Message, MessageType
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from ecolora.config import RunConfig
from ecolora.errors import ConfigError, CorruptPayloadError
from ecolora.runtime.flower import protocol as P
from ecolora.runtime.flower.config import FlowerOptions, from_run_config

if TYPE_CHECKING:
    from ecolora.runtime.driver import Delivery, RoundDriver, RoundPlan

POLL_S = 0.25  # reply polling period (Grid.send_and_receive sleeps 3 s between pulls)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg, opts = from_run_config(context.run_config)
    run_rounds(grid, cfg, opts)


def exchange(grid: Grid, messages: Iterable[Message], timeout: float) -> list[Message]:
    """Push, then pull replies until all arrived or ``timeout`` passed; late ones are ignored."""
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(pending))
        replies += got
        pending -= {m.metadata.reply_to_message_id for m in got}
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    return replies


def join(grid: Grid, cfg: RunConfig, opts: FlowerOptions) -> dict[int, int]:
    """Client index -> node id, asking each node which partition it holds (one query each)."""
    k_total = cfg.fed.clients
    need = opts.min_clients or k_total
    nodes: dict[int, int] = {}
    counts: dict[int, int] = {}  # num-partitions -> the first node that reported it
    asked: set[int] = set()
    deadline = time.monotonic() + opts.join_timeout
    while True:
        new = [n for n in grid.get_node_ids() if n not in asked]
        if new:
            asked.update(new)
            msgs = [Message(P.hello_content(), n, MessageType.QUERY) for n in new]
            left = max(1.0, deadline - time.monotonic())
            for reply in exchange(grid, msgs, left):
                src = reply.metadata.src_node_id
                if reply.has_error():
                    log(WARNING, "node %s failed the hello: %s", src, reply.error.reason)
                    continue
                pid, num = P.parse_hello(reply.content)
                counts.setdefault(num, src)
                if len(counts) > 1:
                    other = next(n for n in counts if n != num)
                    raise ConfigError(f"node {src} has num-partitions={num}, node "
                                      f"{counts[other]} num-partitions={other}: start every "
                                      "SuperNode with the same num-partitions")
                for k in P.hosted(pid, num, k_total):
                    if k in nodes and nodes[k] != src:
                        raise ConfigError(f"nodes {nodes[k]} and {src} both hold client {k} "
                                          "(same partition-id, or different num-partitions)")
                    nodes[k] = src
        if len(nodes) == k_total:
            break
        if time.monotonic() >= deadline:
            if len(nodes) >= need:
                break
            raise ConfigError(f"only {len(nodes)} of {k_total} partitions joined within "
                              f"{opts.join_timeout:g}s (need {need}): start more SuperNodes "
                              "or set flower.min-clients")
        time.sleep(POLL_S)
    log(INFO, "ecolora: clients -> nodes %s", dict(sorted(nodes.items())))
    return nodes


def collect(replies: list[Message], expect: dict[int, int], round_: int
            ) -> tuple[dict[int, P.TrainRes], dict[int, str], dict[int, str]]:
    """Sort replies into (results, rejected, dropped), keyed by client; never raises."""
    results: dict[int, P.TrainRes] = {}
    rejected: dict[int, str] = {}
    dropped: dict[int, str] = {}
    client_of = {node: k for k, node in expect.items()}
    for reply in replies:
        k = client_of.get(reply.metadata.src_node_id)
        if k is None:
            continue
        if reply.has_error():
            dropped[k] = f"client error: {reply.error.reason}"
            continue
        try:
            res = P.parse_train_reply(reply.content)
            if (res.round, res.client) != (round_, k):
                raise CorruptPayloadError("round", 0, f"reply for round {res.round} client "
                                          f"{res.client}, expected {round_} / {k}")
            results[k] = res
        except CorruptPayloadError as exc:
            rejected[k] = str(exc)
    for k in expect:
        if k not in results and k not in rejected and k not in dropped:
            dropped[k] = "no reply before flower.round-timeout"
    return results, rejected, dropped


def run_rounds(grid: Grid, cfg: RunConfig, opts: FlowerOptions) -> dict:
    """Every round of one run on the connected SuperNodes; returns the summary."""
    from ecolora.runtime.driver import RoundDriver
    from ecolora.runtime.outputs import RunWriter
    from ecolora.runtime.setup import build

    start = time.perf_counter()
    setup = build(cfg)  # the server needs the layout, the weights p_k and the eval set
    out = Path(opts.out_dir(cfg))
    writer = RunWriter(out, setup)
    resume = writer.start(opts.resume)
    nodes = join(grid, cfg, opts)
    driver = RoundDriver(setup, resume)
    if resume is not None:  # a new run: no node holds a global of ours any more
        driver.forget_sync()
        log(INFO, "ecolora: resuming %s after round %d", out, resume.round)

    def on_round(row: dict) -> None:
        writer.on_round(row)
        log(INFO, "ecolora round %d/%d: %d clients, up %d B, down %d B, loss %s",
            row["round"], cfg.fed.rounds, row["clients"], row["upload_bytes"],
            row["download_bytes"], row.get("eval_loss", row["train_loss"]))
        for k, why in sorted({**row["rejected"], **row.get("dropped", {})}.items()):
            log(WARNING, "round %d: client %d %s: %s", row["round"], k,
                "rejected" if k in row["rejected"] else "dropped", why)

    since = resume.round if resume is not None else 0  # nodes restore their state (node_state)
    result = driver.run(lambda plan: deliver(grid, plan, nodes, opts, since),
                        lambda params: evaluate_on_nodes(grid, driver, params, nodes, opts, since),
                        on_round, writer.on_checkpoint(), timed=True)
    summary = writer.finish(result["initial"], result["params"], time.perf_counter() - start, {
        "runtime": "flower", "nodes": {str(k): n for k, n in sorted(nodes.items())}})
    log(INFO, "ecolora: results in %s", out.resolve())
    return summary


def deliver(grid: Grid, plan: RoundPlan, nodes: dict[int, int], opts: FlowerOptions,
            resumed_from: int = 0) -> Delivery:
    """Send each planned client its download, collect the replies of this round."""
    from ecolora.runtime.driver import ClientReply, Delivery

    t = plan.round
    present = []
    for k in plan.clients:
        if k in nodes:
            present.append(k)
        else:
            plan.skip(k, "no node holds this partition")
    results, rejected, dropped = {}, {}, {}
    deadline = time.monotonic() + opts.round_timeout
    for wave in waves(present, nodes):
        msgs = []
        for k in wave:
            kind = P.SYNC_DELTA if plan.delta[k] else P.SYNC_FULL
            ins = P.TrainIns(t, k, kind, t - 1, plan.download(k), resumed_from)
            msgs.append(Message(P.train_content(ins), nodes[k], MessageType.TRAIN,
                                group_id=str(t)))
        left = max(1.0, deadline - time.monotonic())
        got = collect(exchange(grid, msgs, left), {k: nodes[k] for k in wave}, t)
        for into, part in zip((results, rejected, dropped), got, strict=True):
            into.update(part)
    replies = [ClientReply(k, results[k].payload, results[k].loss, results[k].nonzeros,
                           results[k].compute_s) for k in present if k in results]
    return Delivery(replies, rejected, dropped)


def waves(clients: list[int], nodes: dict[int, int]) -> list[list[int]]:
    """``clients`` in waves with at most one client per node each, in order.

    A node playing several clients (fewer SuperNodes than clients) gets their messages one
    wave at a time: its ClientApp keeps each client's state in ``context.state``, and two
    messages in flight to one node could both start from the same state and overwrite each
    other's. With one node per client this is a single wave, as before."""
    out: list[list[int]] = []
    for k in clients:
        for wave in out:
            if all(nodes[j] != nodes[k] for j in wave):
                wave.append(k)
                break
        else:
            out.append([k])
    return out


def evaluate_on_nodes(grid: Grid, driver: RoundDriver, params: list, nodes: dict[int, int],
                      opts: FlowerOptions, resumed_from: int = 0) -> dict[str, float]:
    """Personalized eval: every node scores its own model; the unweighted mean of replies."""
    from ecolora.runtime.evaluation import mean_metrics

    t = driver.state.round
    model = driver.setup.method.encode_full_state(params, t)
    scores: dict[int, dict[str, float]] = {}
    deadline = time.monotonic() + opts.round_timeout
    for wave in waves(sorted(nodes), nodes):
        msgs = [Message(P.eval_content(t, k, model, resumed_from), nodes[k], MessageType.EVALUATE,
                        group_id=f"e{t}") for k in wave]
        client_of = {nodes[k]: k for k in wave}
        for reply in exchange(grid, msgs, max(1.0, deadline - time.monotonic())):
            k = client_of.get(reply.metadata.src_node_id)
            if k is None or reply.has_error():
                continue
            try:
                round_, client, metrics = P.parse_eval_reply(reply.content)
            except CorruptPayloadError as exc:
                log(WARNING, "eval of client %s unreadable: %s", k, exc)
                continue
            if (round_, client) == (t, k):
                scores[k] = metrics
    missing = sorted(set(nodes) - set(scores))
    if missing:
        log(WARNING, "eval round %d: no score from clients %s", t + 1, missing)
    if not scores:
        raise ConfigError(f"eval round {t + 1}: no node returned a score")
    return mean_metrics([scores[k] for k in sorted(scores)])
