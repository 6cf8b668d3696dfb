"""Codec benchmark: position coders against the entropy bound, value compression, speed.

Run single-threaded (the thread variables are also set below, before numpy is imported)::

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/codec.py          # ~1-2 min
    pip install -e '.[bench]'    # zstandard and constriction (comparison columns only)

Tables, every number measured in this run:

1. Position coders on the same masks at densities 0.1%, 1%, 10%: random masks, top-k masks of
   real LoRA deltas (the embedded model trained for a few local steps, captured at run time),
   and top-k masks of synthetic LoRA-shaped deltas. Bits per kept index and the ratio to the
   bound sum_i log2 C(n_i, k_i). ECLR columns: ``pos`` is the position streams only, ``+hdr``
   adds the header fields that exist only because a record is sparse (k, the coding
   parameter, stream lengths); tensor id, start and n are framing that a dense record needs too.
2. Speed of every coder on the positions of a 10M-parameter update, as ms and as a ratio to a
   memcpy of the dense float32 update measured in the same run.
3. The whole codec on the 10M update: top-k, ``wire.encode``, ``wire.decode``, separately and
   together, in ms and as ratios to that memcpy.
4. Lossless compression of the kept values of the real deltas (zstd, byte-plane split + zstd).
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402

from ecolora.compress import bitpack, golomb, golomb_search, values, wire  # noqa: E402
from ecolora.compress.sparsify import topk_indices  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from codec_data import bitmask, log2_binom, lora_deltas, masks, real_deltas  # noqa: E402

try:
    import zstandard
except ImportError:  # optional, benchmark only
    zstandard = None
try:
    import constriction
except ImportError:  # optional, benchmark only
    constriction = None

DENSITIES = (0.001, 0.01, 0.1)


# ---- position coders: (encode, decode) on a list of masks; encode returns bytes/arrays ------

def v1_bits(ms, with_header: bool) -> int:
    """Format v1: Rice, two byte-padded streams per tensor (+ its 24-byte record header)."""
    total = 0
    for n, _, idx in ms:
        b = golomb.choose_parameter(n, idx, "empirical_best")
        total += 8 * sum(map(len, golomb.encode_positions(idx, b)))
    return total + (8 * wire._RECORD.size * len(ms) if with_header else 0)


def eclr_encode(ms):
    """Format v2's positions: (unary, remainders, groups, bytes of sparse-only header fields)."""
    ns = [n for n, *_ in ms]
    gaps, ks = golomb.gaps_of_many([idx for *_, idx in ms])
    params = golomb_search.choose_golombs(ns, gaps, ks, "empirical_best")
    unary, rem = golomb.encode_sections(gaps, ks, params)
    head = bytearray()  # the sparse-only varints: k + 1, zigzag(M - reference), unary_nbytes
    for n, k, m in zip(ns, ks.tolist(), params, strict=True):
        bitpack.put_varint(head, k + 1)
        bitpack.put_varint(head, bitpack.zigzag(m - golomb.golomb_reference(n, k)))
    bitpack.put_varint(head, len(unary))
    return unary, rem, list(zip(ns, ks.tolist(), params, strict=True)), len(head)


def eclr_decode(enc):
    unary, rem, groups, _ = enc
    return golomb.decode_sections(unary, rem, groups)


def zstd_encode(ms, level: int) -> bytes:
    """One zstd frame over all tensors' packed bitmasks (zstd's best case: one frame)."""
    packed = np.concatenate([np.packbits(bitmask(n, idx)) for n, _, idx in ms])
    return zstandard.ZstdCompressor(level=level).compress(packed.tobytes())


def zstd_decode(blob: bytes, ms):
    bits = np.unpackbits(np.frombuffer(zstandard.ZstdDecompressor().decompress(blob), np.uint8))
    out, at = [], 0
    for n, _, _ in ms:
        out.append(np.flatnonzero(bits[at : at + n]))
        at += 8 * ((n + 7) // 8)
    return out


def ans_encode(ms):
    """constriction ANS, i.i.d. Bernoulli(k/n) per tensor (p is known from the header)."""
    out = []
    for n, _, idx in ms:
        model = constriction.stream.model.Bernoulli(idx.size / n, perfect=False)
        enc = constriction.stream.stack.AnsCoder()
        enc.encode_reverse(bitmask(n, idx).astype(np.int32), model)
        out.append(enc.get_compressed())
    return out


def ans_decode(words, ms):
    return [np.flatnonzero(constriction.stream.stack.AnsCoder(w).decode(
        constriction.stream.model.Bernoulli(idx.size / n, perfect=False), n))
        for w, (n, _, idx) in zip(words, ms, strict=True)]


def ans_context_bits(ms) -> int:
    """constriction ANS with a 2-D context (bit to the left, bit above), 4 probabilities per
    tensor fitted to the mask and sent as 16-bit side information (64 bits per tensor).
    Size only: decoding needs a per-symbol loop."""
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


# name -> (encode(ms), decode(encoded, ms), bits(encoded)); None where a library is missing
CODERS = {
    "int32": (lambda ms: [idx.astype("<u4").tobytes() for *_, idx in ms],
              lambda e, ms: [np.frombuffer(b, "<u4").astype(np.int64) for b in e],
              lambda e: 8 * sum(map(len, e))),
    "bitmask": (lambda ms: [np.packbits(bitmask(n, idx)) for n, _, idx in ms],
                lambda e, ms: [np.flatnonzero(np.unpackbits(b)[:n]) for b, (n, _, _) in
                               zip(e, ms, strict=True)],
                lambda e: 8 * sum(b.size for b in e)),
    "zstd-3": None if zstandard is None else (
        lambda ms: zstd_encode(ms, 3), zstd_decode, lambda e: 8 * len(e)),
    "zstd-19": None if zstandard is None else (
        lambda ms: zstd_encode(ms, 19), zstd_decode, lambda e: 8 * len(e)),
    "ANS-iid": None if constriction is None else (
        ans_encode, ans_decode, lambda e: 32 * sum(w.size for w in e)),
    "ECLR pos": (eclr_encode, lambda e, ms: eclr_decode(e),
                 lambda e: 8 * (len(e[0]) + len(e[1]))),
}


def cell(bits: float | None, k: int, bound: float) -> str:
    return "n/a" if bits is None else f"{bits / k:.2f} ({bits / bound:.3f})"


def position_table(sets: dict[str, list[np.ndarray]]) -> None:
    print("\n## Position coding: bits per kept index (ratio to the bound)\n")
    names = ["int32", "bitmask", "zstd-3", "zstd-19", "ANS-iid", "ANS-ctx", "v1 Rice",
             "v1 +hdr", "ECLR pos", "ECLR +hdr"]
    head = ["masks", "tensors", "n", "density", "k", "bound"] + names
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, (kind, deltas) in sets.items():
        for density in DENSITIES:
            ms = masks(kind, density, deltas, seed=2)
            k = sum(idx.size for *_, idx in ms)
            bound = sum(log2_binom(n, idx.size) for n, _, idx in ms)
            bits: dict[str, float | None] = {}
            for name, coder in CODERS.items():
                if coder is None:
                    bits[name] = None
                    continue
                enc, dec, size = coder
                encoded = enc(ms)
                assert all(np.array_equal(a, idx) for a, (*_, idx) in
                           zip(dec(encoded, ms), ms, strict=True)), name
                bits[name] = size(encoded)
                if name == "ECLR pos":
                    bits["ECLR +hdr"] = bits[name] + 8 * encoded[3]
            bits["ANS-ctx"] = None if constriction is None else ans_context_bits(ms)
            bits["v1 Rice"], bits["v1 +hdr"] = v1_bits(ms, False), v1_bits(ms, True)
            n_all = sum(n for n, *_ in ms)
            cells = [label, f"{len(ms)}", f"{n_all:,}", f"{density:.1%}", f"{k:,}",
                     f"{bound / k:.2f}"] + [cell(bits[c], k, bound) for c in names]
            print("| " + " | ".join(cells) + " |")


# ---- speed --------------------------------------------------------------------------------

def timed(fn, repeat: int):
    """Best wall time of ``repeat`` calls (after one warm-up) in ms, and the last result."""
    out = fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3, out


def speed_tables(repeat: int) -> None:
    pairs = 76  # 76 x (65,536 + 65,536) = 9,961,472 parameters
    updates = {f"{2 * pairs} LoRA tensors": [d.ravel() for d in lora_deltas(pairs, seed=3)],
               "one 10M vector": [np.random.default_rng(4).standard_normal(10_000_000,
                                                                           np.float32)]}
    rows_coders, rows_wire = [], []
    for name, flat in updates.items():
        dense = np.concatenate(flat)
        dst = np.empty_like(dense)
        for density in DENSITIES:
            t_copy, _ = timed(lambda dst=dst, dense=dense: np.copyto(dst, dense), repeat)
            ks = [max(1, math.ceil(density * f.size)) for f in flat]
            t_topk, kept = timed(lambda ks=ks, flat=flat: [
                topk_indices(f, k) for f, k in zip(flat, ks, strict=True)], repeat)
            ms = [(f.size, 1, idx) for f, idx in zip(flat, kept, strict=True)]
            k, bound = sum(ks), sum(log2_binom(f.size, kk) for f, kk in zip(flat, ks, strict=True))
            for coder, spec in CODERS.items():
                if spec is None:
                    continue
                enc, dec, size = spec
                t_enc, encoded = timed(lambda enc=enc, ms=ms: enc(ms), repeat)
                t_dec, back = timed(lambda dec=dec, e=encoded, ms=ms: dec(e, ms), repeat)
                assert all(np.array_equal(a, b) for a, b in zip(back, kept, strict=True))
                bits = size(encoded)
                rows_coders.append(
                    f"| {name} | {density:.1%} | {coder} | {bits / k:.2f} | {bits / bound:.3f} | "
                    f"{t_enc:.1f} | {t_dec:.1f} | {(t_enc + t_dec) / t_copy:.1f} |")

            def encode(kept=kept, flat=flat):
                recs = [wire.Record(i, 0, f.size, f[idx], idx)
                        for i, (f, idx) in enumerate(zip(flat, kept, strict=True))]
                return wire.encode(wire.Payload(wire.KIND_UPDATE, 1, 0, "fp16", recs))

            t_enc, buf = timed(encode, repeat)
            t_dec, out = timed(lambda buf=buf: wire.decode(buf), repeat)
            assert all(np.array_equal(r.indices, idx)
                       for r, idx in zip(out.records, kept, strict=True))
            both = t_enc + t_dec
            rows_wire.append(
                f"| {name} | {density:.1%} | {k:,} | {len(buf):,} | {8 * len(buf) / k:.2f} | "
                f"{t_topk:.1f} | {t_enc:.1f} | {t_dec:.1f} | {both:.1f} | "
                f"**{t_topk + both:.1f}** | {t_copy:.2f} | {t_topk / t_copy:.1f} | "
                f"{both / t_copy:.1f} | {(t_topk + both) / t_copy:.1f} |")
    print("\n## Speed of the position coders on a 10M-parameter update (one thread)\n")
    print("| update | density | coder | bits/index | / bound | encode ms | decode ms | "
          "(enc+dec)/memcpy |")
    print("|" + "---|" * 8)
    print("\n".join(rows_coders))
    print("\n## The whole codec on a 10M-parameter update: fp16 values, one thread\n")
    print("| update | density | k | payload bytes | bits/kept entry | top-k ms | encode ms | "
          "decode ms | enc+dec ms | top-k+enc+dec ms | memcpy ms | top-k/memcpy | "
          "(enc+dec)/memcpy | (top-k+enc+dec)/memcpy |")
    print("|" + "---|" * 14)
    print("\n".join(rows_wire))
    print(f"\n(best of {repeat} runs after a warm-up; memcpy = np.copyto of the dense float32 "
          "update (40 MB), measured in the same run next to each row)")


# ---- values -------------------------------------------------------------------------------

def value_table(sets: dict[str, list[np.ndarray]], repeat: int) -> None:
    print("\n## Lossless compression of the kept values (top-k): bits per value; v2 = exponent "
          "planes DEFLATE-1 (``compress.values``), ms for these values\n")
    cz = None if zstandard is None else zstandard.ZstdCompressor(level=3)

    def planes(raw: bytes, item: int, top: int) -> bytes:  # most significant planes first
        return np.frombuffer(raw, np.uint8).reshape(-1, item)[:, ::-1].T[:top].tobytes()

    def deflate(data: bytes) -> bytes:
        packer = zlib.compressobj(1, zlib.DEFLATED, -15)
        return packer.compress(data) + packer.flush()

    print("| deltas | density | values | dtype | plain | zstd-3 | all planes+zstd-3 | "
          "all planes+DEFLATE-1 | v2 | v2 values saved | v2 enc ms | v2 dec ms | "
          "v2 payload saved |")
    print("|" + "---|" * 13)
    for label, deltas in sets.items():
        _value_rows(label, deltas, cz, planes, deflate, repeat)


def _value_rows(label, deltas, cz, planes, deflate, repeat) -> None:
    for density in DENSITIES:
        ms = masks("topk", density, deltas, seed=2)
        vals = np.concatenate([d.ravel()[idx] for d, (*_, idx) in zip(deltas, ms, strict=True)])
        if label == "synthetic":  # arbitrary scale: bring it to a realistic one (no fp16 inf)
            vals = vals / np.abs(vals).max()
        unary, rem, _, head = eclr_encode(ms)
        pos_bytes = len(unary) + len(rem) + head
        for dtype in ("fp16", "bf16", "fp32"):
            raw, item = wire.encode_values(vals, dtype), values.ITEMSIZE[dtype]
            t_enc, packed = timed(lambda r=raw, d=dtype: values.pack(r, d), repeat)
            size = len(raw) if packed is None else sum(map(len, packed))
            t_dec = math.nan
            if packed is not None:
                t_dec, back = timed(lambda p=packed, d=dtype, n=vals.size: values.unpack(
                    *p, n, d, 0), repeat)
                assert back == raw
            zstd_bits = None if cz is None else [8 * len(cz.compress(raw)),
                                                 8 * len(cz.compress(planes(raw, item, item)))]
            cells = [label, f"{density:.1%}", f"{vals.size:,}", dtype, f"{8 * item}"] + [
                "n/a" if zstd_bits is None else f"{b / vals.size:.2f}" for b in zstd_bits or
                [None, None]] + [
                f"{8 * len(deflate(planes(raw, item, item))) / vals.size:.2f}",
                f"{8 * size / vals.size:.2f}", f"{1 - size / len(raw):.1%}",
                f"{t_enc:.2f}", f"{t_dec:.2f}", f"{(len(raw) - size) / (pos_bytes + len(raw)):.1%}"]
            print("| " + " | ".join(cells) + " |")


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from importlib.metadata import PackageNotFoundError, version

    libs = []
    for lib in ("zstandard", "constriction"):
        try:
            libs.append(f"{lib} {version(lib)}")
        except PackageNotFoundError:
            libs.append(f"{lib} missing")
    libs = ", ".join(libs)
    return (f"CPU: {model}, {os.cpu_count()} logical cores visible, load average "
            f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}, numpy "
            f"{np.__version__}, {libs}; threads pinned to 1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16, help="synthetic LoRA pairs, size table")
    ap.add_argument("--clients", type=int, default=4, help="clients whose real deltas are used")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of real training to capture")
    ap.add_argument("--real", default="", help="an .npz of real deltas to load, or to write if "
                    "missing (saves the ~10 s of training; not committed)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    print(machine())
    if args.real and os.path.exists(args.real):
        with np.load(args.real) as z:
            real = [z[name] for name in sorted(z.files, key=lambda s: int(s[1:]))]
    else:
        real = real_deltas(args.clients, args.rounds, seed=0)
        if args.real:
            np.savez(args.real, **{f"d{i}": d for i, d in enumerate(real)})
    print(f"real deltas: {len(real)} tensors ({args.clients} clients x {args.rounds} rounds x "
          f"{len(real) // (args.clients * args.rounds)} LoRA tensors of the embedded model), "
          f"{sum(d.size for d in real):,} entries")
    synthetic = lora_deltas(args.pairs, seed=1)
    position_table({"random, real shapes": ("random", real), "real top-k": ("topk", real),
                    "random, synthetic shapes": ("random", synthetic),
                    "synthetic LoRA top-k": ("topk", synthetic)})
    value_table({"real": real, "synthetic": synthetic}, args.repeat)
    if not args.skip_speed:
        speed_tables(args.repeat)


if __name__ == "__main__":
    main()
