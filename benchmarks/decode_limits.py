"""Issue 13 D1: how long and how much memory decoding hostile-but-valid payloads of up to 10 MB
takes, with the receiver's layout cap (``max_records``, what ``Method`` passes) and without.

    nice -n 19 python benchmarks/decode_limits.py [--uncapped]

Memory is the peak of Python allocations (tracemalloc, numpy included) above the input. The
decoded float32 values are part of it: 4 bytes per value, so a 10 MB payload of q4 codes (21M
values) cannot decode in less than 84 MB.
"""

from __future__ import annotations

import argparse
import struct
import time
import tracemalloc
import zlib

import numpy as np

from ecolora.compress import bitpack, wire
from ecolora.errors import CorruptPayloadError

TEN_MB = 10 << 20


def records_payload(n_records: int, n: int, k: int | None) -> bytes:
    """n_records records of n entries: dense (k None) or sparse with k=0 (4 bytes each)."""
    head = bytearray()
    for t in range(n_records):
        for field in (t % 100, 0, n, 0 if k is None else k + 1):
            bitpack.put_varint(head, field)
    bitpack.put_varint(head, 0)
    body = wire._HEADER.pack(wire.MAGIC, 2, 0, 0, 0, 0, 0, 0, n_records) + bytes(head)
    body += bytes(2 * n * n_records if k is None else 0)
    return body + struct.pack("<I", zlib.crc32(body))


def dense_payload(nbytes: int) -> bytes:
    n = (nbytes - 40) // 2
    vals = np.random.default_rng(0).normal(size=n).astype(np.float32)
    return wire.encode(wire.Payload(0, 0, 0, "fp16", [wire.Record(0, 0, n, vals)]),
                       compress_values=False)


def quantized_payload(nbytes: int, dtype: str) -> bytes:
    """One dense record of q8/q4 codes filling ``nbytes`` (format v3)."""
    n = (nbytes - 40) * (1 if dtype == "q8" else 2)
    vals = np.random.default_rng(0).normal(size=n).astype(np.float32)
    return wire.encode(wire.Payload(0, 0, 0, dtype, [wire.Record(0, 0, n, vals, None, 0.02)]))


def sparse_payload(nbytes: int) -> bytes:
    n = 1 << 28
    k = nbytes // 4
    idx = np.sort(np.random.default_rng(1).choice(n, k, replace=False))
    vals = np.ones(k, np.float32)
    return wire.encode(wire.Payload(0, 0, 0, "fp16", [wire.Record(0, 0, n, vals, idx)]))


def measure(buf: bytes, max_records: int | None) -> tuple[str, float, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        wire.decode(buf, max_records=max_records)
        verdict = "decoded"
    except CorruptPayloadError as err:
        verdict = f"rejected ({err.field})"
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return verdict, dt, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uncapped", action="store_true", help="also decode without a layout cap")
    ap.add_argument("--layout", type=int, default=448, help="tensors in the layout "
                    "(448 = LLaMA-2-7B, all linear layers)")
    args = ap.parse_args()
    cases = {
        "2.6M empty (n=0) records, 10 MB": records_payload(TEN_MB // 4 - 8, 0, None),
        "2.6M sparse k=0 records, 10 MB": records_payload(TEN_MB // 4 - 8, 1, 0),
        "1M one-entry dense records, 7 MB": records_payload(1_000_000, 1, None),
        "one dense record, 10 MB of fp16": dense_payload(TEN_MB),
        "one sparse record, 10 MB": sparse_payload(TEN_MB),
        "one dense q8 record, 10 MB (10.5M values)": quantized_payload(TEN_MB, "q8"),
        "one dense q4 record, 10 MB (21M values)": quantized_payload(TEN_MB, "q4"),
    }
    caps = [args.layout, None] if args.uncapped else [args.layout]
    print("| payload | bytes | max_records | result | seconds | peak MB |")
    print("|---|---|---|---|---|---|")
    for name, buf in cases.items():
        for cap in caps:
            verdict, dt, mb = measure(buf, cap)
            print(f"| {name} | {len(buf):,} | {cap} | {verdict} | {dt:.3f} | {mb:.1f} |")


if __name__ == "__main__":
    main()
