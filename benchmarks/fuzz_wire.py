"""Long fuzz run of ``wire.decode``, run by hand (CI runs tests/test_wire_fuzz.py instead).

    python benchmarks/fuzz_wire.py [--cases 100000] [--seed 0] [--limit 1.0]
    python benchmarks/fuzz_wire.py --atheris -- -runs=100000    # coverage-guided, if installed

A seeded loop over random and mutated v1, v2 and v3 (q8/q4 values) payloads, with the mutations
and the oracle of ``ecolora.compress.fuzzing`` (shared with the CI test): bit flips, byte
writes, header fields set to boundary or random values (v2 varints also in non-canonical form),
truncations, insertions, deletions, headers and record headers spliced from other payloads,
foreign or random tails, and wholly random bodies behind a valid magic/version. The CRC32
trailer is recomputed for 95% of cases so that the structural checks, not the checksum,
decide.

Outcomes: ``ok`` (decoded, and consistent: re-encoding reproduces the bytes), ``rejected``
(CorruptPayloadError), ``crash`` (any other exception), ``inconsistent`` (decoded, but not what
the bytes say) and ``hang`` (over ``--limit`` seconds; an interval timer interrupts the case).
Prints the counts per format version and the first few failures with their seeds; exit status
1 on any failure.
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

from ecolora.compress import fuzzing, wire

MAX_NUMEL = 1 << 20
SIZES = (1, 2, 7, 64, 1000, 20_000, 100_000)


class Hang(Exception):
    pass


def run(cases: int, seed: int, limit: float) -> int:
    ch = fuzzing.NumpyChooser(np.random.default_rng(seed))
    pool = [fuzzing.valid_payload(ch, SIZES, max_records=5) for _ in range(256)]
    outcomes = ("ok", "rejected", "crash", "inconsistent", "hang")
    counts = {v: dict.fromkeys(outcomes, 0) for v in ("v1", "v2", "v3", "other")}
    failures: list[str] = []
    slowest = 0.0

    def on_alarm(signum, frame):
        raise Hang

    signal.signal(signal.SIGALRM, on_alarm)
    t_start = time.perf_counter()
    for case in range(cases):
        buf = fuzzing.make_case(ch, pool)
        names = {wire.V1: "v1", wire.V2: "v2", wire.V3: "v3"}
        version = names.get(buf[4] if len(buf) > 4 else -1, "other")
        t0 = time.perf_counter()
        detail = ""
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            outcome = fuzzing.check(buf, MAX_NUMEL)
        except Hang:
            outcome = "hang"
        except AssertionError as err:
            outcome, detail = "inconsistent", str(err)
        except Exception:  # noqa: BLE001 - counting everything else is the point
            outcome, detail = "crash", traceback.format_exc(limit=-3)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - t0
        slowest = max(slowest, elapsed)
        if elapsed > limit and outcome != "hang":
            outcome = "hang"
        counts[version][outcome] += 1
        if outcome in ("crash", "inconsistent", "hang") and len(failures) < 5:
            failures.append(f"case {case} (seed {seed}): {outcome} {buf.hex()[:200]}\n{detail}")
    total = time.perf_counter() - t_start
    print(f"{cases:,} cases in {total:.1f} s ({total / cases * 1e3:.3f} ms/case), "
          f"slowest decode+check {slowest * 1e3:.1f} ms, limit {limit} s")
    for version, row in counts.items():
        print(f"{version:>5}: " + "  ".join(f"{k}={v:,}" for k, v in row.items()))
    every = {k: sum(row[k] for row in counts.values()) for k in outcomes}
    print("  all: " + "  ".join(f"{k}={v:,}" for k, v in every.items()))
    for f in failures:
        print(f)
    return int(any(every[k] for k in ("crash", "inconsistent", "hang")))


def run_atheris(argv: list[str]) -> None:
    import atheris  # optional, by hand only

    def one_input(data: bytes) -> None:
        body = wire.MAGIC + bytes([wire.V2 if data[:1] < b"\x80" else wire.V1]) + data[1:]
        fuzzing.check(body + struct.pack("<I", zlib.crc32(body)), MAX_NUMEL)

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
