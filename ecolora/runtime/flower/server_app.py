"""The Flower ServerApp: the simulator's round loop, with clients on SuperNodes.

What each round computes is ``rounds.server_round`` and the method object, exactly as in
``runtime/sim.py``; this file only decides *who* gets *which bytes*:

* a node that synced the previous round gets the last broadcast delta, any other node the full
  fp32 state (``Method.encode_full_state``): the same download rule and byte count as the sim;
* client order, sampling (``sim.sample_clients``), weights and seeds are the sim's, so one seed
  and config give the same per-round bytes and the same losses on both runtimes;
* a node that errors or misses ``flower.round-timeout`` is dropped from that round (logged, in
  the row's ``dropped``) and resynced with the full state next time; a payload the method
  refuses is in ``rejected``, as in the simulator. The round always closes.

Rows go to ``metrics.jsonl`` after every round and ``summary.json`` at the end, through the same
writers and ``summarize`` as ``ecolora run``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from ecolora.config import RunConfig
from ecolora.errors import ConfigError, CorruptPayloadError
from ecolora.runtime.flower import protocol as P
from ecolora.runtime.flower.config import FlowerOptions, from_run_config

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
                if num != k_total:
                    raise ConfigError(f"node {src} has num-partitions={num}, the run has "
                                      f"fed.clients={k_total}")
                if pid in nodes and nodes[pid] != src:
                    raise ConfigError(f"nodes {nodes[pid]} and {src} both hold partition {pid}")
                nodes[pid] = src
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
    from ecolora.methods import ServerState
    from ecolora.report.results import summarize, write_json, write_jsonl
    from ecolora.runtime.evaluation import evaluate_global
    from ecolora.runtime.network import round_comm_s
    from ecolora.runtime.rounds import server_round
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import sample_clients
    from ecolora.train.model import get_params

    start = time.perf_counter()
    setup = build(cfg)  # the server needs the layout, the weights p_k and the eval set
    out = Path(opts.out_dir(cfg))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.to_dict())
    method = setup.method
    nodes = join(grid, cfg, opts)
    params = get_params(setup.model)
    initial = evaluate_global(setup, params, 0)
    synced: dict[int, int] = {}  # client -> round whose global its node holds
    last_broadcast = b""
    server = ServerState()
    rows: list[dict] = []
    for t in range(cfg.fed.rounds):
        t0 = time.perf_counter()
        sampled = sample_clients(cfg.fed.seed, t, cfg.fed.clients, cfg.fed.participation)
        full = method.encode_full_state(params, t)
        msgs, down, expect = [], [], {}
        dropped_early = {k: "no node holds this partition" for k in sampled if k not in nodes}
        for k in sampled:
            if k not in nodes:
                continue
            delta = t > 0 and synced.get(k) == t - 1
            model = last_broadcast if delta else full
            ins = P.TrainIns(t, k, P.SYNC_DELTA if delta else P.SYNC_FULL, t - 1, model)
            msgs.append(Message(P.train_content(ins), nodes[k], MessageType.TRAIN,
                                group_id=str(t)))
            down.append(len(model))
            expect[k] = nodes[k]
        replies = exchange(grid, msgs, opts.round_timeout)
        results, rejected, dropped = collect(replies, expect, t)
        order = sorted(results)  # the simulator's order: aggregation sums in the same order
        uploads = [(k, results[k].payload, setup.weights[k]) for k in order]
        srv = server_round(method, uploads, t, server, params)
        params, last_broadcast = srv.params, srv.broadcast
        rejected.update(srv.rejected)
        for k in expect:  # a node that replied holds this round's global; others resync fully
            if k in results or k in rejected:
                synced[k] = t
            else:
                synced.pop(k, None)
        dropped.update(dropped_early)
        for k, why in sorted({**rejected, **dropped}.items()):
            log(WARNING, "round %d: client %d %s: %s", t + 1, k,
                "rejected" if k in rejected else "dropped", why)
        up = [len(results[k].payload) for k in order]
        row = {
            "round": t + 1,
            "method": cfg.method,
            "clients": len(order),
            "train_loss": float(np.mean([results[k].loss for k in order])) if order else None,
            "upload_bytes": int(sum(up)),
            "upload_nonzeros": int(sum(results[k].nonzeros for k in order)),
            "download_bytes": int(sum(down)),
            "upload_bytes_max": max(up, default=0),  # the slowest transfer sets comm time
            "download_bytes_max": max(down, default=0),
            "compute_s": max((results[k].compute_s for k in order), default=0.0),
            "comm_s": round_comm_s(up, down, cfg.network),
            "rejected": rejected,
            "dropped": dropped,
        }
        if (t + 1) % cfg.fed.eval_every == 0 or t + 1 == cfg.fed.rounds:
            row.update(evaluate_global(setup, params, t + 1))
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        write_jsonl(out / "metrics.jsonl", rows)
        log(INFO, "ecolora round %d/%d: %d clients, up %d B, down %d B, loss %s", t + 1,
            cfg.fed.rounds, len(order), row["upload_bytes"], row["download_bytes"],
            row.get("eval_loss", row["train_loss"]))
    summary = summarize(rows, initial, cfg.to_dict(), time.perf_counter() - start, {
        "runtime": "flower", "lora_parameters": setup.layout.numel,
        "truncated_examples": setup.truncated, "client_sizes": [len(c) for c in setup.clients],
        "nodes": {str(k): n for k, n in sorted(nodes.items())},
    })
    write_json(out / "summary.json", summary)
    log(INFO, "ecolora: results in %s", out.resolve())
    return summary
