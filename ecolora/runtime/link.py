"""A real, rate-limited link between two network namespaces, for timing actual payloads.

``EmulatedLink`` creates namespaces ``client`` and ``server`` joined by a veth pair and shapes each
direction with ``tc``: ``netem rate R delay D`` where the kernel has netem, else ``tbf rate R``
(token bucket of about one MTU, so a message never rides on a saved-up burst). Where latency is
asked for but netem is missing (containers often lack ``sch_netem``), the veth pair is replaced
by two TAP devices and a user-space delay line (``relay``) that holds every frame for the
one-way latency; ``tbf`` still shapes the rate. ``transfer_times`` then sends messages over one
TCP connection, as a federated client does each round, separated by idle gaps longer than the
retransmission timeout, and returns for each the seconds from the first byte written to the
last byte read (both ends read the same monotonic clock; namespaces do not virtualize it).

Needs root, ``ip`` and ``tc`` (iproute2); ``check_support`` says why not when they are missing.
Stdlib only: the sender, receiver and relay run as ``python -m ecolora.runtime.link ROLE``.
"""

from __future__ import annotations

import collections
import ctypes
import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

PORT = 47811
ADDR = {"client": "10.213.0.1", "server": "10.213.0.2"}
CLONE_NEWNET = 0x40000000
TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000


def check_support() -> str | None:
    """None when this machine can build the link, else a one-line reason."""
    if os.name != "posix" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (creates network namespaces and tc qdiscs)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` from iproute2 on PATH"
    probe = f"ecl-probe-{os.getpid()}"
    try:
        ok = _sh(f"ip netns add {probe}", check=False).returncode == 0
    finally:
        _sh(f"ip netns del {probe}", check=False)
    return None if ok else "`ip netns add` fails here (no CAP_SYS_ADMIN or no netns support)"


def idle_gap_s(latency_ms: float) -> float:
    """Idle time before each message so cubic's window decays back to the initial one.

    Linux halves an idle connection's window once per retransmission timeout (about the RTT
    plus the 200 ms minimum) down to 10 segments; eight timeouts bring any window we reach back,
    which is the state after a client's seconds of local training.
    """
    if latency_ms <= 0:
        return 0.3
    return 0.2 + 8 * (0.2 + 2 * latency_ms / 1e3)


def _sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and res.returncode:
        raise RuntimeError(f"`{cmd}` failed: {res.stderr.strip()}")
    return res


class EmulatedLink:
    """Context manager: ``with EmulatedLink(5, 20, 30) as link: link.transfer_times(...)``."""

    def __init__(self, up_mbps: float, down_mbps: float, latency_ms: float,
                 mode: str = "auto") -> None:
        self.up, self.down, self.latency_ms = up_mbps, down_mbps, latency_ms
        self.mode = mode  # auto | netem | tbf | tap (tbf rate + user-space delay line)
        tag = f"{os.getpid()}-{id(self) % 10_000}"
        self.ns = {"client": f"ecl-cli-{tag}", "server": f"ecl-srv-{tag}"}
        self.relay: subprocess.Popen | None = None

    def __enter__(self) -> EmulatedLink:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        for ns in self.ns.values():
            _sh(f"ip netns add {ns}")
            _sh(f"ip -n {ns} link set lo up")
        rates = {"client": self.up, "server": self.down}
        if self.mode in ("auto", "netem"):
            self._veth()
            ok = all(self._netem(side, rates[side]) for side in self.ns)
            if ok:
                self.mode = "netem"
                return
            if self.mode == "netem":
                raise RuntimeError("the kernel has no netem qdisc (sch_netem)")
            self.mode = "tap" if self.latency_ms > 0 else "tbf"
            if self.mode == "tap":  # rebuild with TAP devices and the delay line
                for ns in self.ns.values():
                    _sh(f"ip -n {ns} link del dev ecl0", check=False)
        if self.mode == "tbf":
            if self.latency_ms > 0:
                raise RuntimeError("mode tbf cannot add latency; use auto, netem or tap")
            if not _sh(f"ip -n {self.ns['client']} link show ecl0", check=False).returncode == 0:
                self._veth()
        elif self.mode == "tap":
            self._taps()
        for side in self.ns:
            self._tbf(side, rates[side])

    def _veth(self) -> None:
        a, b = self.ns["client"], self.ns["server"]
        _sh(f"ip link add ecl0 netns {a} type veth peer name ecl0 netns {b}")
        self._addresses()

    def _taps(self) -> None:
        for ns in self.ns.values():
            _sh(f"ip -n {ns} tuntap add dev ecl0 mode tap")
        self.relay = subprocess.Popen(
            [sys.executable, "-m", "ecolora.runtime.link", "relay", self.ns["client"],
             self.ns["server"], str(self.latency_ms / 1e3)],
            stdout=subprocess.PIPE, text=True)
        if self.relay.stdout.readline().strip() != "ready":
            raise RuntimeError("the delay line did not start")
        self._addresses()

    def _addresses(self) -> None:
        for side, ns in self.ns.items():
            _sh(f"ip -n {ns} addr add {ADDR[side]}/24 dev ecl0")
            _sh(f"ip -n {ns} link set ecl0 up")

    def _netem(self, side: str, mbps: float) -> bool:
        cmd = (f"tc -n {self.ns[side]} qdisc replace dev ecl0 root netem rate {mbps}mbit "
               f"delay {self.latency_ms}ms limit 100000")
        return _sh(cmd, check=False).returncode == 0

    def _tbf(self, side: str, mbps: float) -> None:
        rate = mbps * 1e6 / 8
        burst = max(1600, int(rate * 0.0005))  # one MTU frame; more only at high rates
        limit = max(100_000, int(rate * 10))  # deep queue: shaping delays, never drops
        _sh(f"tc -n {self.ns[side]} qdisc replace dev ecl0 root tbf rate {mbps}mbit "
            f"burst {burst} limit {limit}")

    def close(self) -> None:
        if self.relay is not None and self.relay.poll() is None:
            self.relay.terminate()
            self.relay.wait(timeout=10)
        for ns in self.ns.values():
            _sh(f"ip netns del {ns}", check=False)

    def transfer_times(self, sizes: list[int], direction: str = "up",
                       gap_s: float | None = None, congestion: str = "cubic") -> list[float]:
        """Seconds per message of ``sizes`` bytes, client->server ("up") or back ("down").

        ``congestion`` is the sender's TCP congestion control. Linux's default, cubic, restarts
        slow start after an idle gap, which ``network.transfer_s`` models; BBR keeps pacing at
        its bandwidth estimate instead (Linux skips the idle restart for it).
        """
        src, dst = ("client", "server") if direction == "up" else ("server", "client")
        gap = gap_s if gap_s is not None else idle_gap_s(self.latency_ms)
        me = [sys.executable, "-m", "ecolora.runtime.link"]
        recv = subprocess.Popen(["ip", "netns", "exec", self.ns[dst], *me, "recv", ADDR[dst]],
                                stdout=subprocess.PIPE, text=True)
        try:
            if recv.stdout.readline().strip() != "ready":
                raise RuntimeError("receiver did not start")
            send = subprocess.run(["ip", "netns", "exec", self.ns[src], *me, "send", ADDR[dst],
                                   ",".join(map(str, sizes)), str(gap), congestion],
                                  capture_output=True, text=True, timeout=600)
            if send.returncode:
                raise RuntimeError(f"sender failed: {send.stderr.strip()[-300:]}")
            starts = json.loads(send.stdout)
            ends = json.loads(recv.stdout.readline())
        finally:
            if recv.poll() is None:
                recv.kill()
            recv.wait()
        return [e - s for s, e in zip(starts, ends, strict=True)]


# ---- roles run inside the namespaces -----------------------------------------------------
def _read_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _recv(addr: str) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, PORT))
    srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept()
    done = []
    while True:
        (n,) = struct.unpack("<Q", _read_exact(conn, 8))
        if n == 0:
            break
        _read_exact(conn, n)
        done.append(time.monotonic())
        conn.sendall(b"k")  # lets the sender wait until this message is fully in
    print(json.dumps(done), flush=True)


def _send(addr: str, sizes: str, gap: float, congestion: str) -> None:
    conn = socket.socket()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
    conn.settimeout(120)
    conn.connect((addr, PORT))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    starts = []
    for n in map(int, sizes.split(",")):
        time.sleep(gap)  # idle like a client computing its round: TCP restarts slow start
        data = struct.pack("<Q", n - 8) + os.urandom(n - 8)  # n bytes on the stream in total
        starts.append(time.monotonic())
        conn.sendall(data)
        _read_exact(conn, 1)
    conn.sendall(struct.pack("<Q", 0))
    conn.close()
    print(json.dumps(starts), flush=True)


def _relay(ns_a: str, ns_b: str, delay: float) -> None:
    """Hold every frame ``delay`` seconds between the two TAP devices, in both directions."""
    libc = ctypes.CDLL(None, use_errno=True)
    fds = []
    for ns in (ns_a, ns_b):
        nsfd = os.open(str(Path("/run/netns") / ns), os.O_RDONLY)
        if libc.setns(nsfd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        os.close(nsfd)
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", b"ecl0", IFF_TAP | IFF_NO_PI))
        fds.append(fd)
    for src, dst in ((fds[0], fds[1]), (fds[1], fds[0])):
        queue: collections.deque = collections.deque()
        ready = threading.Condition()
        threading.Thread(target=_reader, args=(src, queue, ready, delay), daemon=True).start()
        threading.Thread(target=_writer, args=(dst, queue, ready), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def _reader(fd: int, queue: collections.deque, ready: threading.Condition, delay: float) -> None:
    while True:
        frame = os.read(fd, 65536)
        with ready:
            queue.append((time.monotonic() + delay, frame))
            ready.notify()


def _writer(fd: int, queue: collections.deque, ready: threading.Condition) -> None:
    while True:
        with ready:
            while not queue:
                ready.wait()
            due, frame = queue.popleft()
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        os.write(fd, frame)


if __name__ == "__main__":
    role, args = sys.argv[1], sys.argv[2:]
    if role == "recv":
        _recv(args[0])
    elif role == "send":
        _send(args[0], args[1], float(args[2]), args[3])
    elif role == "relay":
        _relay(args[0], args[1], float(args[2]))
    else:
        raise SystemExit(f"unknown role {role!r}")
