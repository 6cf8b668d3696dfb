"""Measured vs modeled communication time: a short run's actual payloads over real shaped links.

    sudo python benchmarks/link.py [--presets wan,mobile] [--methods fedit,topk-ef,ecolora]
                                   [--rounds 2] [--clients 3] [--set key=value ...] [--out DIR]

Runs a short simulation per method and keeps every payload it produced (client uploads, the
round broadcasts, the initial full state). Then, per network preset, builds two network
namespaces joined by a tc-shaped link (``ecolora.runtime.link``: veth + netem, or TAP devices
with a delay line + tbf where the kernel has no netem), sends each payload over TCP the way a
client would (one connection, idle between rounds) and compares the measured time with
``runtime.network.transfer_s`` (the TCP model ``ecolora`` reports) and with the spec's ideal
latency + bytes/bandwidth formula. Prints a markdown table; ``--out`` also writes link.json.
Needs root and iproute2 (exit 2 with the reason otherwise). Sleeps most of the time (idle gaps).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecolora.config import RunConfig, merge, parse_set
from ecolora.report.results import write_json
from ecolora.runtime.link import EmulatedLink, check_support
from ecolora.runtime.network import preset, transfer_s


def run_payloads(method: str, args: argparse.Namespace) -> list[tuple[str, str, bytes]]:
    """(direction, label, bytes) of every distinct message of a short run of ``method``."""
    from ecolora.runtime.setup import build
    from ecolora.runtime.sim import simulate

    over = parse_set(args.sets)
    over.setdefault("fed", {}).update(rounds=args.rounds, clients=args.clients)
    setup = build(merge(RunConfig(), {**over, "method": method}))
    m, out = setup.method, []

    def spy(name, direction, label, pick):
        real = getattr(m, name)

        def wrapped(*a, **k):
            res = real(*a, **k)
            out.append((direction, label, pick(res)))
            return res
        setattr(m, name, wrapped)

    spy("client_update", "up", "client upload", lambda r: r.payload)
    spy("encode_broadcast", "down", "round broadcast", lambda r: r)
    spy("encode_full_state", "down", "full state (fp32)", lambda r: r)
    simulate(setup)
    return out


def _err(model: float, measured: float) -> str:
    return f"{100 * (model / measured - 1):+.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="wan,mobile")
    ap.add_argument("--methods", default="fedit,topk-ef,ecolora")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--congestion", default="cubic", help="sender TCP congestion control")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    reason = check_support()
    if reason:
        print(f"error: measured link benchmark cannot run here: {reason}", file=sys.stderr)
        sys.exit(2)
    messages = {m: run_payloads(m, args) for m in args.methods.split(",")}
    rows = []
    print("| preset | link | method | message | bytes | measured ms | TCP model ms (err) "
          "| ideal ms (err) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.presets.split(","):
        p = preset(name)
        with EmulatedLink(p["uplink_mbps"], p["downlink_mbps"], p["latency_ms"]) as link:
            for method, msgs in messages.items():
                for direction in ("up", "down"):
                    sel = [(lab, len(b) + 8) for d, lab, b in msgs if d == direction]
                    got = link.transfer_times([s for _, s in sel], direction,
                                              congestion=args.congestion)
                    mbps = p["uplink_mbps"] if direction == "up" else p["downlink_mbps"]
                    for (label, size), meas in zip(sel, got, strict=True):
                        tcp = transfer_s(size, mbps, p["latency_ms"])
                        ideal = transfer_s(size, mbps, p["latency_ms"], "ideal")
                        rows.append(dict(preset=name, link=link.mode, method=method,
                                         message=label, bytes=size, measured_s=meas,
                                         tcp_model_s=tcp, ideal_model_s=ideal))
                        print(f"| {name} | {link.mode} | {method} | {label} | {size} "
                              f"| {1e3 * meas:.1f} | {1e3 * tcp:.1f} ({_err(tcp, meas)}) "
                              f"| {1e3 * ideal:.1f} ({_err(ideal, meas)}) |", flush=True)
    for key in ("tcp_model_s", "ideal_model_s"):
        errs = [abs(r[key] / r["measured_s"] - 1) for r in rows]
        total = sum(r[key] for r in rows) / sum(r["measured_s"] for r in rows) - 1
        print(f"{key}: max |error| {100 * max(errs):.1f}%, mean |error| "
              f"{100 * sum(errs) / len(errs):.1f}%, error of the summed time {100 * total:+.1f}%")
    if args.out:
        write_json(args.out / "link.json", {"args": vars(args) | {"out": str(args.out)},
                                            "rows": rows})


if __name__ == "__main__":
    main()
