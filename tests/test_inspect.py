"""`ecolora inspect` reads every method's upload format; corrupt files are one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from ecolora.cli.inspect import decode_any
from ecolora.cli.main import app
from ecolora.compress.layout import AdapterLayout
from ecolora.config import METHODS, CompressConfig
from ecolora.methods import build_method

LAYOUT = AdapterLayout.from_shapes({
    "l.0.q.lora_A.w": (4, 32), "l.0.q.lora_B.w": (48, 4),
    "l.0.v.lora_A.w": (4, 32), "l.0.v.lora_B.w": (48, 4),
    "l.1.q.lora_A.w": (4, 32), "l.1.q.lora_B.w": (48, 4),
})


def _upload(name: str, down: bool = False) -> bytes:
    method = build_method(name, CompressConfig(compress_download=down), LAYOUT)
    rng = np.random.default_rng(0)
    delta = [rng.normal(size=t.numel).astype(np.float32) for t in LAYOUT.tensors]
    return method.client_update(delta, None, client=1, round_=3).payload


@pytest.mark.parametrize("name", METHODS)
def test_inspect_reads_every_methods_payload(name, tmp_path):
    buf = _upload(name)
    path = tmp_path / f"{name}.bin"
    path.write_bytes(buf)
    res = CliRunner().invoke(app, ["inspect", str(path)])
    assert res.exit_code == 0, (name, res.output, res.exception)
    want = build_method(name, CompressConfig(), LAYOUT)._decode(buf)
    head, *records = res.output.strip().splitlines()
    assert head.startswith("update, ") and "round 3, " in head and f"{len(buf)} bytes" in head
    assert len(records) == len(want.records) > 0
    int32 = build_method(name, CompressConfig(), LAYOUT).variant.positions == "int32"
    assert ("raw int32" in head) == int32 and ("Golomb-Rice" in head) != int32
    msg, _ = decode_any(buf, 1 << 20)
    kept = sum(r.n if r.indices is None else len(r.indices) for r in msg.records)
    assert kept == sum(r.n if r.indices is None else len(r.indices) for r in want.records)


@pytest.mark.parametrize("name", ["topk-ef", "eco-no-golomb", "ecolora"])
def test_inspect_rejects_a_flipped_byte_in_one_line(name, tmp_path):
    buf = bytearray(_upload(name))
    buf[len(buf) // 2] ^= 0xFF
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(buf))
    res = subprocess.run([sys.executable, "-m", "ecolora.cli.main", "inspect", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
