"""Codec benchmark: position coders against the entropy bound, value compression, speed.

Run single-threaded (the thread variables are also set below, before numpy is imported)::

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/codec.py

Three tables, all on synthetic data from fixed seeds:

1. Position coders on the same masks, random and clustered (top-k of LoRA-shaped deltas whose
   rows and columns have very different scales), at densities 0.1%, 1%, 10%: bits per kept
   index and ratio to the bound sum_i log2 C(n_i, k_i) over the tensors.
2. Lossless compression of the kept 16-bit values (zstd, byte-plane split + zstd).
3. Speed of a 10M-parameter update: top-k, ``wire.encode``, ``wire.decode``, as absolute ms and
   as a ratio to ``np.copyto`` of the dense float32 update measured in the same run.

``zstandard`` and ``constriction`` are optional (benchmark only); missing ones print "n/a".
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from ecolora.compress import golomb, wire  # noqa: E402
from ecolora.compress.sparsify import topk_indices  # noqa: E402

try:
    import zstandard
except ImportError:  # optional, benchmark only
    zstandard = None
try:
    import constriction
except ImportError:  # optional, benchmark only
    constriction = None

DENSITIES = (0.001, 0.01, 0.1)
D_MODEL, RANK = 4096, 16  # one LoRA pair: B is (d_out x r), A is (r x d_in)


# ---- data ---------------------------------------------------------------------------------

def lora_deltas(pairs: int, seed: int) -> list[np.ndarray]:
    """B and A deltas whose rows/columns have very different scales (heavy-tailed features)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(pairs):
        rows = rng.lognormal(0.0, 1.5, D_MODEL).astype(np.float32)  # output features of B
        cols = rng.lognormal(0.0, 0.7, RANK).astype(np.float32)  # rank directions
        b = rows[:, None] * cols[None, :] * rng.standard_normal((D_MODEL, RANK), np.float32)
        feat = rng.lognormal(0.0, 1.0, D_MODEL).astype(np.float32)  # input features of A
        feat[rng.choice(D_MODEL, D_MODEL // 100, replace=False)] *= 10.0  # outlier channels
        dirs = rng.lognormal(0.0, 0.7, RANK).astype(np.float32)
        a = dirs[:, None] * feat[None, :] * rng.standard_normal((RANK, D_MODEL), np.float32)
        out += [b, a]
    return out


def masks(kind: str, density: float, deltas: list[np.ndarray], seed: int):
    """Per tensor (n, row length, sorted kept indices), for the same n and k in both kinds."""
    rng = np.random.default_rng(seed)
    out = []
    for d in deltas:
        n, k = d.size, max(1, math.ceil(density * d.size))
        if kind == "random":
            idx = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
        else:
            idx = topk_indices(d.ravel(), k)
        out.append((n, d.shape[1], idx))
    return out


def log2_binom(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def bitmask(n: int, idx: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[idx] = True
    return m


# ---- position coders: each returns the bits it needs for all tensors ----------------------

def rice_bits(ms) -> int:
    total = 0
    for n, _, idx in ms:
        b = golomb.choose_parameter(n, idx, "empirical_best")
        unary, rem = golomb.encode_positions(idx, b)
        assert np.array_equal(golomb.decode_positions(unary, rem, n, idx.size, b), idx)
        total += 8 * (len(unary) + len(rem))
    return total


def zstd_bits(ms, level: int) -> int | None:
    """One zstd frame over all tensors' packed bitmasks (zstd's best case: one frame)."""
    if zstandard is None:
        return None
    packed = np.concatenate([np.packbits(bitmask(n, idx)) for n, _, idx in ms]).tobytes()
    blob = zstandard.ZstdCompressor(level=level).compress(packed)
    assert zstandard.ZstdDecompressor().decompress(blob) == packed
    return 8 * len(blob)


def ans_iid_bits(ms) -> int | None:
    """constriction ANS, i.i.d. Bernoulli(k/n) per tensor (p is known from the header)."""
    if constriction is None:
        return None
    total = 0
    for n, _, idx in ms:
        m = bitmask(n, idx).astype(np.int32)
        model = constriction.stream.model.Bernoulli(idx.size / n, perfect=False)
        enc = constriction.stream.stack.AnsCoder()
        enc.encode_reverse(m, model)
        words = enc.get_compressed()
        dec = constriction.stream.stack.AnsCoder(words)
        assert np.array_equal(dec.decode(model, n), m)
        total += 32 * words.size
    return total


def ans_context_bits(ms) -> int | None:
    """constriction ANS with a 2-D context (bit to the left, bit above), 4 probabilities per
    tensor fitted to the mask and sent as 16-bit side information (64 bits per tensor).
    Encode-side count only: decoding needs a per-symbol loop, which would be slow here."""
    if constriction is None:
        return None
    total = 0
    for n, width, idx in ms:
        m = bitmask(n, idx)
        left = np.concatenate([[False], m[:-1]])
        above = np.concatenate([np.zeros(width, bool), m[:-width]])
        ctx = left.astype(np.int8) * 2 + above
        ones = np.bincount(ctx, weights=m, minlength=4)
        seen = np.bincount(ctx, minlength=4)
        p = np.clip((ones + 0.5) / (seen + 1.0), 2**-16, 1 - 2**-16)
        p = np.round(p * 65536) / 65536  # what the 16-bit side information carries
        enc = constriction.stream.stack.AnsCoder()
        enc.encode_reverse(m.astype(np.int32), constriction.stream.model.Bernoulli(perfect=False),
                           p[ctx].astype(np.float64))
        total += 32 * enc.get_compressed().size + 64
    return total


CODERS = [
    ("int32", lambda ms: 32 * sum(idx.size for *_, idx in ms)),
    ("bitmask", lambda ms: sum(8 * ((n + 7) // 8) for n, _, _ in ms)),
    ("zstd-3", lambda ms: zstd_bits(ms, 3)),
    ("zstd-19", lambda ms: zstd_bits(ms, 19)),
    ("ANS-iid", ans_iid_bits),
    ("ANS-ctx", ans_context_bits),
    ("Rice", rice_bits),
    ("Rice+hdr", lambda ms: rice_bits(ms) + 8 * 24 * len(ms)),  # + the 24-byte record header
]


def position_table(pairs: int) -> None:
    deltas = lora_deltas(pairs, seed=1)
    n_all = sum(d.size for d in deltas)
    print(f"\n## Position coding: {len(deltas)} LoRA tensors ({pairs} x B {D_MODEL}x{RANK} + "
          f"A {RANK}x{D_MODEL}), n = {n_all:,}; bits per kept index (ratio to bound)\n")
    head = ["mask", "density", "k", "bound"] + [name for name, _ in CODERS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for kind in ("random", "lora-topk"):
        for density in DENSITIES:
            ms = masks(kind, density, deltas, seed=2)
            k = sum(idx.size for *_, idx in ms)
            bound = sum(log2_binom(n, idx.size) for n, _, idx in ms)
            cells = [kind, f"{density:.1%}", f"{k:,}", f"{bound / k:.2f}"]
            for _, coder in CODERS:
                bits = coder(ms)
                cells.append("n/a" if bits is None else f"{bits / k:.2f} ({bits / bound:.3f})")
            print("| " + " | ".join(cells) + " |")


# ---- values -------------------------------------------------------------------------------

def timed(fn, repeat: int):
    """Best wall time of ``repeat`` calls (after one warm-up) in ms, and the last result."""
    out = fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3, out


def value_table(pairs: int, repeat: int) -> None:
    print("\n## Lossless compression of the kept values (LoRA top-k masks); bits per value, "
          "encode/decode ms per 1M values\n")
    if zstandard is None:
        print("zstandard is not installed: skipped")
        return
    deltas = lora_deltas(pairs, seed=1)
    cz, dz = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()

    def split(raw: bytes, item: int) -> bytes:  # byte planes, most significant plane first
        planes = np.frombuffer(raw, np.uint8).reshape(-1, item)[:, ::-1].T
        return cz.compress(planes.tobytes())

    def unsplit(blob: bytes, item: int) -> bytes:
        planes = np.frombuffer(dz.decompress(blob), np.uint8).reshape(item, -1)
        return planes[::-1].T.tobytes()

    print("| density | values | dtype | raw | zstd-3 | split+zstd-3 | saving | enc ms/1M | "
          "dec ms/1M | share of payload saved |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for density in DENSITIES:
        ms = masks("lora-topk", density, deltas, seed=2)
        vals = np.concatenate([d.ravel()[idx] for d, (*_, idx) in zip(deltas, ms, strict=True)])
        vals /= np.abs(vals).max()  # a realistic update scale for fp16 (no overflow)
        pos_bits = rice_bits(ms)
        for dtype in ("fp16", "bf16", "fp32"):
            raw, item = wire.encode_values(vals, dtype), wire._ITEMSIZE[dtype]
            plain = cz.compress(raw)
            t_enc, blob = timed(lambda raw=raw, item=item: split(raw, item), repeat)
            t_dec, back = timed(lambda blob=blob, item=item: unsplit(blob, item), repeat)
            assert back == raw
            scale = 1e6 / vals.size
            saved = 8 * (len(raw) - len(blob))
            cells = [f"{density:.1%}", f"{vals.size:,}", dtype, f"{8 * item}",
                     f"{8 * len(plain) / vals.size:.2f}", f"{8 * len(blob) / vals.size:.2f}",
                     f"{1 - len(blob) / len(raw):.1%}", f"{t_enc * scale:.1f}",
                     f"{t_dec * scale:.1f}", f"{saved / (pos_bits + 8 * len(raw)):.1%}"]
            print("| " + " | ".join(cells) + " |")


# ---- speed --------------------------------------------------------------------------------

def speed_rows(name: str, flat: list[np.ndarray], repeat: int) -> None:
    dense = np.concatenate(flat)
    dst = np.empty_like(dense)
    for density in DENSITIES:
        ks = [max(1, math.ceil(density * f.size)) for f in flat]
        t_topk, kept = timed(lambda ks=ks: [topk_indices(f, k) for f, k in
                                            zip(flat, ks, strict=True)], repeat)

        def enc(kept=kept):
            recs = [wire.Record(i, 0, f.size, f[idx], idx)
                    for i, (f, idx) in enumerate(zip(flat, kept, strict=True))]
            return wire.encode(wire.Payload(wire.KIND_UPDATE, 1, 0, "fp16", recs))

        t_enc, buf = timed(enc, repeat)
        t_dec, out = timed(lambda buf=buf: wire.decode(buf), repeat)
        t_copy, _ = timed(lambda: np.copyto(dst, dense), repeat)
        assert all(np.array_equal(r.indices, idx)
                   for r, idx in zip(out.records, kept, strict=True))
        k = sum(ks)
        pos_bits = 0
        for f, idx in zip(flat, kept, strict=True):
            b = golomb.choose_parameter(f.size, idx, "empirical_best")
            pos_bits += 8 * sum(map(len, golomb.encode_positions(idx, b)))
        bound = sum(log2_binom(f.size, kk) for f, kk in zip(flat, ks, strict=True))
        both = t_enc + t_dec
        print(f"| {name} | {density:.1%} | {k:,} | {len(buf):,} | {8 * len(buf) / k:.2f} | "
              f"{pos_bits / k:.2f} | {pos_bits / bound:.3f} | {t_topk:.1f} | {t_enc:.1f} | "
              f"{t_dec:.1f} | {both:.1f} | {t_copy:.2f} | {both / t_copy:.1f} | "
              f"{(t_topk + both) / t_copy:.1f} |")


def speed_table(repeat: int) -> None:
    pairs = 76  # 76 x (65,536 + 65,536) = 9,961,472 parameters
    print("\n## Speed: encode + decode of a 10M-parameter update, fp16 values, one thread\n")
    print("| update | density | k | payload bytes | bits/kept entry | position bits/index | "
          "pos / bound | top-k ms | encode ms | decode ms | enc+dec ms | memcpy ms | "
          "(enc+dec)/memcpy | (top-k+enc+dec)/memcpy |")
    print("|" + "---|" * 14)
    speed_rows(f"{2 * pairs} LoRA tensors", [d.ravel() for d in lora_deltas(pairs, seed=3)],
               repeat)
    speed_rows("one 10M vector",
               [np.random.default_rng(4).standard_normal(10_000_000, np.float32)], repeat)
    print(f"\n(best of {repeat} runs after a warm-up; memcpy = np.copyto of the dense float32 "
          "update, same run)")


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"CPU: {model}, {os.cpu_count()} logical cores visible; Python "
            f"{platform.python_version()}, numpy {np.__version__}; threads pinned to 1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16, help="LoRA pairs in the size tables")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    print(machine())
    position_table(args.pairs)
    value_table(args.pairs, args.repeat)
    if not args.skip_speed:
        speed_table(args.repeat)


if __name__ == "__main__":
    main()
