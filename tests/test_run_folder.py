"""Safe run folders (issue 15): verified checkpoints, a lock against a second writer, no silent
overwrite, stale temporary files removed, permissions from the umask, SIGTERM like Ctrl-C."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ecolora.cli.out_guard import LOCK_NAME, RunLock, check_out, claim, remove_stale_temps
from ecolora.config import RunConfig
from ecolora.errors import ConfigError, DataError
from ecolora.report.results import atomic_write
from ecolora.runtime.checkpoint import FILENAME, SimState, load_checkpoint, save_checkpoint

NAMES = ["a.lora_A", "a.lora_B"]


def _state() -> SimState:
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(4096).astype(np.float32) for _ in NAMES]
    return SimState(round=1, params=params, initial={"eval_loss": 1.0, "eval_accuracy": 0.0},
                    rows=[{"round": 1}], residuals={0: [p * 0.5 for p in params], 1: None})


def _flip(data: bytes, at: int, n: int = 64) -> bytes:
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + n]) + data[at + n:]


# ------------------------------------------------------------------- checkpoint checksums


def test_checkpoint_round_trips_with_checksums(tmp_path: Path) -> None:
    path, cfg = tmp_path / FILENAME, RunConfig()
    save_checkpoint(path, _state(), cfg, NAMES)
    state = load_checkpoint(path, cfg, NAMES)
    assert state.round == 1 and np.array_equal(state.params[1], _state().params[1])
    assert state.residuals[1] is None


@pytest.mark.parametrize("where", ["middle", "tensor data", "header json"])
def test_flipped_bytes_are_a_one_line_error(where: str, tmp_path: Path) -> None:
    path, cfg = tmp_path / FILENAME, RunConfig()
    save_checkpoint(path, _state(), cfg, NAMES)
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    at = {"middle": len(data) // 2, "tensor data": header_end + 1000,
          "header json": header_end - 300}[where]
    path.write_bytes(_flip(data, at))
    with pytest.raises(DataError) as exc:
        load_checkpoint(path, cfg, NAMES)
    message = str(exc.value)
    assert "corrupt checkpoint" in message and "\n" not in message


def test_a_checkpoint_without_checksums_is_refused(tmp_path: Path) -> None:
    from safetensors.numpy import load, save

    path, cfg = tmp_path / FILENAME, RunConfig()
    save_checkpoint(path, _state(), cfg, NAMES)
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as fh:
        meta = fh.metadata()
    tensors = load(path.read_bytes())
    path.write_bytes(save(tensors, metadata={"ecolora": meta["ecolora"]}))
    with pytest.raises(DataError, match="no checksums"):
        load_checkpoint(path, cfg, NAMES)


# ------------------------------------------------------------------- --out rules, lock


def test_check_out_rules(tmp_path: Path) -> None:
    check_out(tmp_path / "new" / "deeper", resume=False, overwrite=False)  # creatable: fine
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", resume=False, overwrite=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="is not empty; pass --overwrite"):
        check_out(run, resume=False, overwrite=False)
    check_out(run, resume=False, overwrite=True)
    check_out(run, resume=True, overwrite=False)
    with pytest.raises(ConfigError, match="exclude each other"):
        check_out(run, resume=True, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "run"]  # nothing created


def test_lock_refuses_a_second_writer_and_is_released(tmp_path: Path) -> None:
    first = RunLock(tmp_path)
    with pytest.raises(ConfigError, match=f"in use by another ecolora run \\(pid {os.getpid()}"):
        RunLock(tmp_path)
    first.release()
    RunLock(tmp_path).release()


def test_claim_overwrites_and_removes_stale_temps(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("old\n")
    (tmp_path / "adapter").mkdir()
    (tmp_path / ".checkpoint.safetensors.x1.tmp").write_bytes(b"half")
    (tmp_path / ".adapter.k2").mkdir()
    (tmp_path / LOCK_NAME).write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        claim(tmp_path, resume=False, overwrite=False)
    claim(tmp_path, resume=True, overwrite=False)  # resume keeps the run, drops temp files
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "adapter", "metrics.jsonl"]
    claim(tmp_path, resume=False, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]
    assert remove_stale_temps(tmp_path) == []


def test_atomic_writes_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.json", lambda fh: fh.write("{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640


# ------------------------------------------------------------------- real runs


def ecolora(*args: object, umask: int | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecolora.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
                          **kw)


def job(model: Path, data: Path, out: Path, rounds: int = 2) -> list[object]:
    return ["run", "--model", model, "--dataset", data, "--out", out, "--rounds", rounds,
            "--clients", 2, "--quiet", "--set", "eval_examples=4", "--set", "train_examples=24",
            "--set", "local_steps=1", "--set", "eval_every=100", "--set", "checkpoint_every=1",
            "--set", "eval_samples=0"]


@pytest.fixture(scope="module")
def finished(tiny_model_dir, alpaca_file, tmp_path_factory) -> Path:
    """A finished 2-round run, written under umask 027."""
    out = tmp_path_factory.mktemp("done") / "run"
    res = ecolora(*job(tiny_model_dir, alpaca_file, out), umask=0o027)
    assert res.returncode == 0, res.stderr
    return out


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


def test_outputs_follow_the_umask(finished: Path) -> None:
    modes = {p.relative_to(finished).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [finished, *finished.rglob("*")] if p.name != LOCK_NAME}
    assert {m for p, m in modes.items() if (finished / p).is_dir()} == {0o750}
    assert {m for p, m in modes.items() if (finished / p).is_file()} == {0o640}, modes
    assert "adapter/adapter_model.safetensors" in modes


def test_rerun_into_a_finished_run_is_refused(finished, tiny_model_dir, alpaca_file) -> None:
    before = sorted(p.name for p in finished.iterdir())
    res = ecolora(*job(tiny_model_dir, alpaca_file, finished))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "is not empty; pass --overwrite" in res.stderr
    assert sorted(p.name for p in finished.iterdir()) == before


def test_damaged_checkpoint_is_refused_on_resume(finished, tmp_path) -> None:
    run = _copy(finished, tmp_path / "run")
    data = (run / FILENAME).read_bytes()
    (run / FILENAME).write_bytes(_flip(data, len(data) // 2))  # the 64 flipped bytes
    res = ecolora("run", "--resume", run, "--quiet")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "corrupt checkpoint" in res.stderr and "Traceback" not in res.stderr


def test_resume_removes_stale_temps_and_respects_the_lock(finished, tmp_path) -> None:
    run = _copy(finished, tmp_path / "run")
    (run / ".checkpoint.safetensors.dead.tmp").write_bytes(b"half a checkpoint")
    fd = os.open(run / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another "run" holds the folder
    try:
        res = ecolora("run", "--resume", run, "--quiet")
    finally:
        os.close(fd)
    assert res.returncode == 2 and "in use by another ecolora run" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1
    assert (run / ".checkpoint.safetensors.dead.tmp").exists()  # not ours to touch then
    res = ecolora("run", "--resume", run, "--quiet")
    assert res.returncode == 0, res.stderr
    assert not list(run.glob(".*.tmp"))


def test_sigterm_is_handled_like_ctrl_c(tiny_model_dir, alpaca_file, tmp_path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ecolora.cli.main",
                             *map(str, job(tiny_model_dir, alpaca_file, out, rounds=400))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = out / "metrics.jsonl"
            if metrics.is_file() and metrics.read_text().count("\n") >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["terminated (SIGTERM)"], err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["round"] == len(rows)
    assert (out / FILENAME).is_file() and not list(out.glob(".*.tmp"))
    RunLock(out).release()  # the dead run's lock is gone with its process


def test_rejected_uploads_warn_once_and_all_rejected_exits_3(capsys) -> None:
    from ecolora.cli.run import Rejections
    from ecolora.errors import RunFailedError

    rows = [{"round": t, "clients": 2, "rejected": {0: "non-finite value", 1: "non-finite"}}
            for t in (1, 2)]
    seen = Rejections()
    for row in rows:
        seen.add(row, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: round 1: every upload was rejected, the global adapter did not "
                   "change (client 0: non-finite value)"]
    with pytest.raises(RunFailedError, match="all 4 uploads were rejected") as exc:
        Rejections.finish(rows)
    assert exc.value.exit_code == 3
    Rejections.finish([{"round": 1, "clients": 2, "rejected": {1: "x"}}])
    assert "1 of 2 uploads were rejected" in capsys.readouterr().err
