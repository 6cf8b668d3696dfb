"""Long fuzz run of ``wire.decode``, run by hand (CI runs tests/test_wire_fuzz.py instead).

    python benchmarks/fuzz_wire.py [--cases 100000] [--seed 0] [--limit 1.0]
    python benchmarks/fuzz_wire.py --atheris -- -runs=100000    # coverage-guided, if installed

A seeded loop over random and mutated payloads: bit flips, byte writes, record fields set to
boundary or random values, truncations, insertions, deletions, headers and records spliced from
other payloads, random tails, and wholly random bodies behind a valid magic/version. The CRC32
trailer is recomputed for 95% of cases so that the structural checks, not the checksum, decide.

Outcomes: ``ok`` (decoded, and consistent: re-encoding reproduces the bytes), ``rejected``
(CorruptPayloadError), ``crash`` (any other exception), ``inconsistent`` (decoded, but not what
the bytes say) and ``hang`` (over ``--limit`` seconds; an interval timer interrupts the case).
Prints the counts and the first few failures with their seeds; exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import signal
import struct
import sys
import time
import traceback
import zlib

import numpy as np

from ecolora.compress import golomb, wire
from ecolora.errors import CorruptPayloadError

MAX_NUMEL = 1 << 20
RULES = ("rice_kiely_floor", "rice_ceil", "empirical_best")
FIELDS = {"tensor": (0, "<I"), "start": (4, "<I"), "n": (8, "<I"), "k": (12, "<I"),
          "coding": (16, "<B"), "rice_b": (17, "<B"), "reserved": (18, "<H"),
          "unary_nbytes": (20, "<I")}


class Hang(Exception):
    pass


def valid_payload(rng: np.random.Generator) -> bytes:
    records = []
    for t in range(int(rng.integers(1, 6))):
        n = int(rng.choice([0, 1, 2, 7, 64, 1000, 20_000, 100_000]))
        if n and n <= 1000 and rng.random() < 0.2:
            records.append(wire.Record(t, 0, n, rng.normal(size=n).astype(np.float32)))
            continue
        k = int(rng.integers(0, n + 1)) if rng.random() < 0.3 else int(rng.integers(0, n // 20 + 2))
        k = min(k, n)
        idx = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
        records.append(wire.Record(t, int(rng.integers(0, 1 << 20)), n,
                                   rng.normal(size=k).astype(np.float32), idx))
    dtype = str(rng.choice(list(wire.DTYPES)))
    payload = wire.Payload(int(rng.integers(0, 2)), int(rng.integers(0, 1 << 32)),
                           int(rng.integers(0, 1 << 16)), dtype, records)
    return wire.encode(payload, str(rng.choice(RULES)))


def record_offsets(buf: bytes) -> list[int]:
    """Offsets of the record headers that fit, reading ``buf`` as if it were valid."""
    if len(buf) < wire._HEADER.size:
        return []
    count = struct.unpack_from("<I", buf, 16)[0]
    item = 4 if buf[6] == wire.DTYPES["fp32"] else 2
    pos, out = wire._HEADER.size, []
    while len(out) < count and pos + wire._RECORD.size <= len(buf):
        out.append(pos)
        _, _, n, k, coding, b, _, unary_nbytes = wire._RECORD.unpack_from(buf, pos)
        rem = golomb.remainder_nbytes(k, b) if coding == wire.RICE else 0
        pos += wire._RECORD.size + unary_nbytes + rem + k * item
    return out


def mutate(rng: np.random.Generator, body: bytearray, pool: list[bytes]) -> bytearray:
    op = int(rng.integers(0, 10))
    other = pool[int(rng.integers(0, len(pool)))][:-4]
    if op == 0 and body:
        body[int(rng.integers(0, len(body)))] ^= 1 << int(rng.integers(0, 8))
    elif op == 1 and body:
        body[int(rng.integers(0, len(body)))] = int(rng.integers(0, 256))
    elif op in (2, 3):  # record fields: the structural checks live here, so twice the weight
        offsets = record_offsets(bytes(body))
        if offsets:
            at, fmt = FIELDS[str(rng.choice(list(FIELDS)))]
            at += offsets[int(rng.integers(0, len(offsets)))]
            top = (1 << (8 * struct.calcsize(fmt))) - 1
            (old,) = struct.unpack_from(fmt, body, at)
            new = [0, 1, 2, 31, 32, top, old - 1, old + 1, 2 * old, int(rng.integers(0, top + 1))]
            struct.pack_into(fmt, body, at, min(max(new[int(rng.integers(0, len(new)))], 0), top))
    elif op == 4:
        del body[int(rng.integers(0, len(body) + 1)) :]
    elif op == 5:
        pos = int(rng.integers(0, len(body) + 1))
        body[pos:pos] = rng.bytes(int(rng.integers(1, 9)))
    elif op == 6 and body:
        pos = int(rng.integers(0, len(body)))
        del body[pos : pos + int(rng.integers(1, 9))]
    elif op == 7:
        body[: wire._HEADER.size] = other[: wire._HEADER.size]
    elif op == 8:
        mine, theirs = record_offsets(bytes(body)), record_offsets(other)
        if mine and theirs:
            a = mine[int(rng.integers(0, len(mine)))]
            b = theirs[int(rng.integers(0, len(theirs)))]
            body[a : a + wire._RECORD.size] = other[b : b + wire._RECORD.size]
    else:
        cut = int(rng.integers(0, len(body) + 1))
        body[cut:] = other[int(rng.integers(0, len(other) + 1)) :] if rng.random() < 0.5 else \
            rng.bytes(int(rng.integers(0, 64)))
    return body


def make_case(rng: np.random.Generator, pool: list[bytes]) -> bytes:
    if rng.random() < 0.05:  # a random body behind a valid magic and version
        body = bytearray(wire.MAGIC + bytes([wire.VERSION]) + rng.bytes(int(rng.integers(0, 200))))
    else:
        body = bytearray(pool[int(rng.integers(0, len(pool)))][:-4])
        for _ in range(int(rng.integers(1, 5))):
            body = mutate(rng, body, pool)
    if rng.random() < 0.05:
        return bytes(body) + rng.bytes(4)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def reencode(buf: bytes, out: wire.Payload) -> bytes:
    """The only bytes that may decode to ``out``, with the Rice parameters stored in ``buf``."""
    parts = [buf[: wire._HEADER.size]]
    for rec, at in zip(out.records, record_offsets(buf), strict=True):
        values = wire.encode_values(rec.values, out.dtype)
        if rec.indices is None:
            parts += [wire._RECORD.pack(rec.tensor, rec.start, rec.n, rec.n, 0, 0, 0, 0), values]
            continue
        k, b = len(rec.indices), buf[at + 17]
        unary, rem = golomb.encode_positions(rec.indices, b) if k else (b"", b"")
        parts += [wire._RECORD.pack(rec.tensor, rec.start, rec.n, k, 1, b, 0, len(unary)),
                  unary, rem, values]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def consistent(buf: bytes, out: wire.Payload) -> bool:
    if len(out.records) != struct.unpack_from("<I", buf, 16)[0]:
        return False
    for rec in out.records:
        idx = rec.indices
        size = rec.n if idx is None else idx.size
        if rec.n > MAX_NUMEL or rec.values.shape != (size,) or not np.isfinite(rec.values).all():
            return False
        if idx is not None and size and not (0 <= idx[0] and idx[-1] < rec.n
                                             and np.all(np.diff(idx) > 0)):
            return False
    return reencode(buf, out) == buf


def run(cases: int, seed: int, limit: float) -> int:
    rng = np.random.default_rng(seed)
    pool = [valid_payload(rng) for _ in range(256)]
    counts = dict.fromkeys(("ok", "rejected", "crash", "inconsistent", "hang"), 0)
    failures: list[str] = []
    slowest = 0.0

    def on_alarm(signum, frame):
        raise Hang

    signal.signal(signal.SIGALRM, on_alarm)
    t_start = time.perf_counter()
    for case in range(cases):
        buf = make_case(rng, pool)
        t0 = time.perf_counter()
        outcome, detail = "ok", ""
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            out = wire.decode(buf, max_numel=MAX_NUMEL)
            signal.setitimer(signal.ITIMER_REAL, 0)
            if not consistent(buf, out):
                outcome = "inconsistent"
        except CorruptPayloadError:
            outcome = "rejected"
        except Hang:
            outcome = "hang"
        except Exception:  # noqa: BLE001 - counting everything else is the point
            outcome, detail = "crash", traceback.format_exc(limit=-3)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - t0
        slowest = max(slowest, elapsed)
        if elapsed > limit and outcome != "hang":
            outcome = "hang"
        counts[outcome] += 1
        if outcome in ("crash", "inconsistent", "hang") and len(failures) < 5:
            failures.append(f"case {case} (seed {seed}): {outcome} {buf.hex()[:200]}\n{detail}")
    total = time.perf_counter() - t_start
    print(f"{cases:,} cases in {total:.1f} s ({total / cases * 1e3:.3f} ms/case), "
          f"slowest decode {slowest * 1e3:.1f} ms, limit {limit} s")
    print("  ".join(f"{k}={v:,}" for k, v in counts.items()))
    for f in failures:
        print(f)
    return int(any(counts[k] for k in ("crash", "inconsistent", "hang")))


def run_atheris(argv: list[str]) -> None:
    import atheris  # optional, by hand only

    def one_input(data: bytes) -> None:
        body = wire.MAGIC + bytes([wire.VERSION]) + data
        buf = body + struct.pack("<I", zlib.crc32(body))
        try:
            out = wire.decode(buf, max_numel=MAX_NUMEL)
        except CorruptPayloadError:
            return
        assert consistent(buf, out), "inconsistent"

    atheris.instrument_all()  # coverage feedback for the already imported codec modules
    atheris.Setup([sys.argv[0], *argv], one_input)
    atheris.Fuzz()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=float, default=1.0, help="seconds before a case is a hang")
    ap.add_argument("--atheris", action="store_true", help="coverage-guided run (libFuzzer)")
    args, rest = ap.parse_known_args()
    if args.atheris:
        run_atheris([a for a in rest if a != "--"])
        return
    sys.exit(run(args.cases, args.seed, args.limit))


if __name__ == "__main__":
    main()
