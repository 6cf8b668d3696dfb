"""Modeled communication time (spec §9 fallback): clients transfer in parallel, so a round
waits for the slowest upload and the slowest download, each paying one latency."""

from __future__ import annotations

from collections.abc import Sequence

from ecolora.config import NetworkConfig


def transfer_s(nbytes: int, mbps: float, latency_ms: float) -> float:
    return latency_ms / 1e3 + nbytes * 8 / (mbps * 1e6)


def round_comm_s(up: Sequence[int], down: Sequence[int], net: NetworkConfig) -> float:
    """T_comm(t) = max_k(lat + up_k/BW_up) + max_k(lat + down_k/BW_down)."""
    t_up = max((transfer_s(b, net.uplink_mbps, net.latency_ms) for b in up), default=0.0)
    t_dn = max((transfer_s(b, net.downlink_mbps, net.latency_ms) for b in down), default=0.0)
    return t_up + t_dn
