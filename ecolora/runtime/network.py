"""Modeled communication time (spec §9), with a TCP-aware transfer time and link presets.

Clients transfer in parallel, so a round waits for the slowest upload and the slowest download:
``T_comm(t) = max_k T(up_k, BW_up) + max_k T(down_k, BW_down)``. The spec's fallback formula is
``T(n) = latency + n / BW`` (``transport='ideal'``). A payload of a few kB to a few hundred kB,
which is what EcoLoRA uploads, is sent over TCP and is then far from ideal on a link with
latency, for two reasons that ``transport='tcp'`` (the default) models:

* **Framing.** Every segment of at most ``MSS`` = 1448 payload bytes (1500 MTU - 20 IPv4 - 20 TCP
  - 12 timestamp option) carries ``HEADER`` = 66 bytes on the link (14 Ethernet + 20 IPv4 + 32
  TCP): +4.6% on large messages. Link rates (presets, ``tc``) are rates of bytes on the wire.
* **Slow start.** A round's message follows seconds of compute, longer than TCP's retransmission
  timeout, so Linux restarts the connection from the initial window (``tcp_slow_start_after_idle``,
  RFC 5681 §4.1; initial window 10 segments, RFC 6928). While a window's worth of segments is
  serialized in less than a round trip the sender idles until its ACKs return, and the window
  doubles each round trip; once it covers the bandwidth-delay product the link stays busy.
  This is the no-loss slow-start term of Cardwell, Savage and Anderson, "Modeling TCP Latency"
  (INFOCOM 2000), on an already open connection (gRPC/Flower keep one open: no handshake).

``benchmarks/link.py`` and ``tests/test_link.py`` check the model against real TCP transfers over
``tc``-shaped links between network namespaces (see docs/compare.md for the numbers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ecolora.config import NetworkConfig
from ecolora.errors import ConfigError

MSS = 1448  # TCP payload bytes per segment on a 1500-byte-MTU path with timestamps
HEADER = 66  # link bytes per segment besides payload: Ethernet 14 + IPv4 20 + TCP 32
INIT_CWND = 10  # segments (RFC 6928)

# Link presets: (uplink Mbit/s, downlink Mbit/s, one-way latency ms). Asymmetric like access
# links: a client uploads much slower than it downloads.
#  lan    1 Gbit/s switched Ethernet, ~1 ms RTT.
#  wan    fixed broadband at the FCC's 2024 benchmark of 100/20 Mbit/s (2024 Section 706
#         Report, FCC 24-27), 30 ms RTT to a cloud region.
#  mobile 4G/LTE: OpenSignal's US Mobile Network Experience report (2018) measured average
#         uploads of 2.4-7 Mbit/s, downloads of 14-21 Mbit/s and latencies of 58-70 ms across
#         the four carriers; rounded to 5 up / 20 down / 60 ms RTT.
PRESETS: dict[str, dict[str, float]] = {
    "lan": {"uplink_mbps": 1000.0, "downlink_mbps": 1000.0, "latency_ms": 0.5},
    "wan": {"uplink_mbps": 20.0, "downlink_mbps": 100.0, "latency_ms": 15.0},
    "mobile": {"uplink_mbps": 5.0, "downlink_mbps": 20.0, "latency_ms": 30.0},
}


def preset(name: str) -> dict[str, float]:
    """The ``network`` knobs of preset ``name`` (lan, wan, mobile)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown network preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def preset_sets(name: str | None) -> list[str]:
    """``--network NAME`` as ``--set`` items, so later ``--set network.*`` still win."""
    return [f"network.{k}={v}" for k, v in preset(name).items()] if name else []


def wire_bytes(nbytes: int) -> int:
    """Bytes on the link for ``nbytes`` of TCP payload (headers of every segment included)."""
    return nbytes + math.ceil(nbytes / MSS) * HEADER


def transfer_s(nbytes: int, mbps: float, latency_ms: float, transport: str = "tcp") -> float:
    """Seconds from the first byte written to the last byte received, for one message."""
    lat = latency_ms / 1e3
    rate = mbps * 1e6 / 8  # bytes per second
    if transport == "ideal" or nbytes <= 0:
        return lat + nbytes * 8 / (mbps * 1e6)
    segments = math.ceil(nbytes / MSS)
    seg_s = (MSS + HEADER) / rate
    rtt, cwnd, sent = 2 * lat, INIT_CWND, 0
    t = 0.0
    # window-limited rounds: the flight is on the wire before its first ACK is back
    while segments - sent > cwnd and cwnd * seg_s < rtt:
        t += rtt + seg_s
        sent += cwnd
        cwnd *= 2
    return t + wire_bytes(nbytes - sent * MSS) / rate + lat


def round_comm_s(up: Sequence[int], down: Sequence[int], net: NetworkConfig) -> float:
    """T_comm(t) = max_k T(up_k, BW_up) + max_k T(down_k, BW_down) (spec §9)."""
    t_up = max((transfer_s(b, net.uplink_mbps, net.latency_ms, net.transport) for b in up),
               default=0.0)
    t_dn = max((transfer_s(b, net.downlink_mbps, net.latency_ms, net.transport) for b in down),
               default=0.0)
    return t_up + t_dn
