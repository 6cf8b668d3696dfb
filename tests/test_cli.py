"""The command line: end-to-end runs, determinism, and every bad input -> one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecolora.compress import wire

FAST = ["--rounds", "2", "--clients", "3", "--quiet", "--set", "eval_examples=16",
        "--set", "train_examples=60", "--set", "eval_every=1", "--set", "local_steps=2"]


def ecolora(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecolora.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["fedit", "ecolora"])
def test_two_round_run_writes_results(method, tiny_model_dir, alpaca_file, tmp_path):
    out = tmp_path / method
    res = ecolora("run", "--method", method, "--model", tiny_model_dir, "--dataset", alpaca_file,
                  "--out", out, *FAST)
    assert res.returncode == 0, res.stderr
    rows = metrics(out)
    assert [r["round"] for r in rows] == [1, 2]
    for key in ("train_loss", "eval_loss", "eval_accuracy", "upload_bytes", "upload_nonzeros",
                "download_bytes", "compute_s", "comm_s"):
        assert key in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_upload_bytes"] == sum(r["upload_bytes"] for r in rows)
    assert summary["config"]["method"] == method
    assert "torch" in summary["versions"]
    assert (out / "curves.png").stat().st_size > 10_000
    assert not list(out.glob(".*.tmp"))


def test_same_seed_same_metrics(tiny_model_dir, alpaca_file, tmp_path):
    """Also across thread counts: one thread against auto (timed, 1 or 2 here) and against 2."""
    runs = []
    for name, threads in (("a", "1"), ("b", "0"), ("b2", "2")):
        res = ecolora("run", "--model", tiny_model_dir, "--dataset", alpaca_file,
                      "--out", tmp_path / name, "--seed", "3", *FAST,
                      "--set", f"model.threads={threads}")
        assert res.returncode == 0, res.stderr
        runs.append([{k: v for k, v in r.items() if k != "compute_s"}
                     for r in metrics(tmp_path / name)])
    assert runs[0] == runs[1] == runs[2]
    other = ecolora("run", "--model", tiny_model_dir, "--dataset", alpaca_file,
                    "--out", tmp_path / "c", "--seed", "4", *FAST)
    assert other.returncode == 0
    assert [r["train_loss"] for r in metrics(tmp_path / "c")] != [r["train_loss"] for r in runs[0]]


def _bad_jsonl(tmp_path: Path) -> Path:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", oops}\n')
    return p


def _no_config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "empty_model"
    d.mkdir()
    return d


def _payload(tmp_path: Path, mutate) -> Path:
    rec = wire.Record(0, 0, 8, np.arange(8, dtype=np.float32))
    p = tmp_path / "p.bin"
    p.write_bytes(mutate(wire.encode(wire.Payload(0, 0, 0, "fp16", [rec]))))
    return p


BAD = [
    ("unknown method", lambda t: ["run", "--method", "fedprox"], "unknown method 'fedprox'"),
    ("unknown knob", lambda t: ["run", "--set", "compress.rho_x=0.1"], "unknown knob 'rho_x'"),
    ("density > 1", lambda t: ["run", "--set", "rho_a=1.5"], "`rho_a` must be in (0.0, 1.0]"),
    ("density 0", lambda t: ["run", "--set", "rho_b=0"], "`rho_b` must be in (0.0, 1.0]"),
    ("bad type", lambda t: ["run", "--set", "rounds=many"], "`rounds` expects int"),
    ("negative threads", lambda t: ["run", "--set", "threads=-2"], "`threads` must be >= 0"),
    ("missing config", lambda t: ["run", "--config", t / "nope.toml"], "config file not found"),
    ("missing file", lambda t: ["run", "--dataset", t / "nope.jsonl"], "dataset file not found"),
    ("malformed line", lambda t: ["run", "--dataset", _bad_jsonl(t)], "bad.jsonl:2: invalid JSON"),
    ("model without config.json", lambda t: ["run", "--model", _no_config_dir(t)],
     "model folder has no config.json"),
    ("truncated payload", lambda t: ["inspect", _payload(t, lambda b: b[:-9])], "corrupt payload"),
    ("tampered payload", lambda t: ["inspect", _payload(t, lambda b: b[:25] + b"\xff" + b[26:])],
     "field 'crc32'"),
]


@pytest.mark.parametrize("name,argv,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_line_exit_2(name, argv, message, tmp_path, tiny_model_dir, alpaca_file):
    out = tmp_path / "out"
    args = argv(tmp_path)
    if args[0] == "run":
        args += ["--out", out, "--quiet"]
        if "--model" not in args:
            args += ["--model", tiny_model_dir]
        if "--dataset" not in args:
            args += ["--dataset", alpaca_file]
    res = ecolora(*args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert message in lines[0]
    assert "Traceback" not in res.stderr
    assert not out.exists()


def test_too_many_segments(tiny_model_dir, alpaca_file, tmp_path):
    res = ecolora("run", "--model", tiny_model_dir, "--dataset", alpaca_file, "--quiet",
                  "--out", tmp_path / "o", "--set", "num_segments=1000")
    assert res.returncode == 2
    assert "num_segments=1000 is larger than the" in res.stderr
    assert not (tmp_path / "o").exists()


def test_help_lists_every_knob():
    res = ecolora("run", "--help")
    assert res.returncode == 0
    from ecolora.config import knob_table

    for key, _, _ in knob_table():
        assert key in res.stdout
    assert "[INF" in res.stdout


def test_toml_config_and_inspect(tmp_path, tiny_model_dir, alpaca_file):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'method = "fedit"\n[model]\nname = "{tiny_model_dir}"\n'
                   f'[data]\ndataset = "{alpaca_file}"\n[fed]\nrounds = 1\nclients = 2\n')
    res = ecolora("run", "--config", cfg, "--out", tmp_path / "o", "--quiet",
                  "--set", "local_steps=1")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["method"] == "fedit" and summary["rounds"] == 1
    ok = ecolora("inspect", _payload(tmp_path, lambda b: b))
    assert ok.returncode == 0 and "kept 8/8" in ok.stdout
    assert ok.stdout.startswith("update,") and "(compress.wire v2)" in ok.stdout


@pytest.mark.parametrize("method", ["fedit", "ecolora"])
def test_embedded_default_two_rounds(method, tmp_path):
    """The default job, shortened to 2 rounds: bundled base model and generated task."""
    out = tmp_path / method
    res = ecolora("run", "--method", method, "--rounds", "2", "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr
    rows = metrics(out)
    assert len(rows) == 2 and rows[-1]["eval_accuracy"] >= 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["initial_eval_accuracy"] < 0.10  # the base cannot do the task yet
    assert summary["config"]["model"]["name"] == "embedded"
    threads = summary["torch_threads"]
    assert threads["chosen"] in threads["candidates"] and threads["seconds_per_step"]
