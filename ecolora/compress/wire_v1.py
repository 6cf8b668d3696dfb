"""Format version 1 records (read forever, written on request): fixed 24-byte record headers.

Layout after the common 20-byte header (see ``wire``), per record::

    record  tensor u32 | start u32 | n u32 | k u32 | coding u8 | rice_b u8 |
            reserved u16 | unary_nbytes u32                                    (24 bytes)
            then the unary stream, ceil(k*b/8) remainder bytes (coding=rice only),
            then k values in ``dtype``

``coding`` 0 is dense (k == n, no positions), 1 is Rice-coded positions (``golomb``'s two
streams, each padded to a byte). Kept as its own module so that v1 payloads (the golden
fixtures, older peers) decode unchanged while v2 evolves; see docs/codec.md for why v2 exists.
"""

from __future__ import annotations

import struct

import numpy as np

from ecolora.compress import golomb
from ecolora.errors import CorruptPayloadError

DENSE, RICE = 0, 1
RECORD = struct.Struct("<IIIIBBHI")


def encode_records(records, dtype: str, choose, encode_values) -> list[bytes]:
    """v1 record bytes, in order (the caller adds header and trailer); ``choose(n, idx)``
    gives the Rice parameter b of each sparse record with k >= 1."""
    parts: list[bytes] = []
    for r in records:
        if r.n < 1:
            raise ValueError("a record covers at least one entry (n >= 1)")
        vals = encode_values(r.values, dtype)
        if r.indices is None:
            if len(r.values) != r.n:
                raise ValueError("dense record needs n values")
            parts += [RECORD.pack(r.tensor, r.start, r.n, r.n, DENSE, 0, 0, 0), vals]
            continue
        idx = np.asarray(r.indices, dtype=np.int64)
        k = idx.size
        if len(r.values) != k or (k and not 0 <= idx[0] <= idx[-1] < r.n):
            raise ValueError("sparse record needs k values at sorted indices in [0, n)")
        b = int(choose(r.n, idx)) if k else 0
        unary, rem = golomb.encode_positions(idx, b) if k else (b"", b"")
        parts += [RECORD.pack(r.tensor, r.start, r.n, k, RICE, b, 0, len(unary)), unary, rem,
                  vals]
    return parts


def decode_record(reader, dtype: str, itemsize: int, max_numel: int, decode_values):
    """One v1 record from ``reader`` (a bounds-checked cursor): (tensor, start, n, values, idx)."""
    at = reader.pos
    tensor, start, n, k, coding, b, reserved, unary_nbytes = RECORD.unpack(
        reader.take(RECORD.size, "record")
    )
    if not 1 <= n <= max_numel:
        raise CorruptPayloadError("n", at + 8, f"n={n} outside [1, {max_numel}]")
    if k > n:
        raise CorruptPayloadError("k", at + 12, f"k={k} > n={n}")
    if reserved:
        raise CorruptPayloadError("reserved", at + 18, "must be zero")
    indices = None
    if coding == DENSE:
        if k != n or b or unary_nbytes:
            raise CorruptPayloadError("coding", at + 16, "dense record with k != n or positions")
    elif coding == RICE:
        if b > golomb.MAX_RICE:
            raise CorruptPayloadError("rice_b", at + 17, f"parameter {b} > {golomb.MAX_RICE}")
        if unary_nbytes > (n + 7) // 8:
            raise CorruptPayloadError("unary_nbytes", at + 20, f"{unary_nbytes} > bound for n={n}")
        unary = reader.take(unary_nbytes, "unary")
        rem = reader.take(golomb.remainder_nbytes(k, b), "remainders")
        indices = golomb.decode_positions(unary, rem, n, k, b, offset=at + RECORD.size)
    else:
        raise CorruptPayloadError("coding", at + 16, f"unknown coding {coding}")
    values = decode_values(reader.take(k * itemsize, "values"), dtype)
    return tensor, start, n, values, indices, at
