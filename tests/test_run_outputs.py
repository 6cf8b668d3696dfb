"""`ecolora run` outputs users expect: TensorBoard, adapters every N rounds and the best one,
saved upload payloads that `ecolora inspect` reads, a portable adapter with a filled model card."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecolora.cli.main import app, main
from ecolora.cli.run_outputs import better, parse_rounds
from ecolora.config import RunConfig
from ecolora.errors import ConfigError
from ecolora.report.model_card import model_card, portable_base
from ecolora.report.trackers import MISSING, check_report_to

FAST = ["--rounds", "3", "--clients", "3", "--quiet", "--set", "eval_examples=16",
        "--set", "train_examples=60", "--set", "eval_every=1", "--set", "local_steps=2"]


def _summary(**over) -> dict:
    cfg = RunConfig().to_dict()
    cfg["method"] = "ecolora"
    s = {"method": "ecolora", "rounds": 30, "total_upload_bytes": 4_130_000,
         "total_upload_nonzeros": 1_000_000, "total_download_bytes": 42_340_000,
         "initial_eval_loss": 2.5, "initial_eval_accuracy": 0.0, "final_eval_loss": 0.31,
         "final_eval_accuracy": 0.944, "best_eval_accuracy": 0.95, "compute_time_s": 14.5,
         "comm_time_s": 8.7, "config": cfg}
    s.update(over)
    return s


def test_portable_base_never_an_absolute_path(tmp_path):
    assert portable_base("embedded") == "embedded" and portable_base("realtext") == "realtext"
    assert portable_base("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # a hub name stays
    local = tmp_path / "my-llama"
    local.mkdir()
    assert portable_base(str(local)) == "my-llama"
    assert portable_base(str(local) + "/") == "my-llama"


def test_model_card_is_filled():
    card = model_card(_summary(), "embedded")
    for text in ("`ecolora`", "| rounds | 30 |", "4,130,000 bytes", "42,340,000 bytes",
                 "Final exact match: 94.4%", "base 0.0%", "`embedded`", "dirichlet partition",
                 "library_name: peft"):
        assert text in card, text
    assert "base_model:" not in card  # not a hub id: no hub metadata pointing nowhere
    hub = model_card(_summary(config={**RunConfig().to_dict(), "model": {
        **RunConfig().to_dict()["model"], "name": "Qwen/Qwen2.5-0.5B"}}), "Qwen/Qwen2.5-0.5B")
    assert "base_model: Qwen/Qwen2.5-0.5B" in hub and "on the Hugging Face hub" in hub


def test_round_lists_and_best_direction():
    assert parse_rounds("1,3", 5) == {1, 3} and parse_rounds("all", 3) == {1, 2, 3}
    assert parse_rounds("last,1", 4) == {1, 4} and parse_rounds(None, 4) == set()
    for bad in ("0", "6", "x", "1,,2"):
        with pytest.raises(ConfigError, match="--save-payloads"):
            parse_rounds(bad, 5)
    assert better("eval_accuracy", 0.5, 0.4) and not better("eval_accuracy", 0.4, 0.4)
    assert better("eval_loss", 0.3, 0.4) and not better("eval_loss", 0.5, 0.4)
    assert better("eval_accuracy", 0.0, None) and not better("eval_accuracy", math.nan, None)


@pytest.mark.parametrize("tracker, module", [("tensorboard", "torch.utils.tensorboard"),
                                             ("wandb", "wandb")])
def test_missing_tracker_is_a_one_line_config_error(tracker, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import -> ImportError
    with pytest.raises(ConfigError) as err:
        check_report_to(tracker)
    assert str(err.value) == MISSING[tracker] and "\n" not in MISSING[tracker]
    assert check_report_to("none") == "none"


def test_run_logs_to_wandb_offline(tiny_model_dir, alpaca_file, tmp_path):
    """W&B in offline mode: one run in OUT/wandb with every round's metrics, named after OUT."""
    pytest.importorskip("wandb")
    out = tmp_path / "wandb-run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_DISABLE_GIT": "true", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    res = subprocess.run(
        [sys.executable, "-m", "ecolora.cli.main", "run", "--model", str(tiny_model_dir),
         "--dataset", str(alpaca_file), "--out", str(out), "--report-to", "wandb", *FAST],
        capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (log,) = runs[0].glob("run-*.wandb")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # wandb 0.30 has no Python reader for its log; history items are protobuf fields holding the
    # key and its value as JSON text, which is enough to check what was logged, round by round
    logged = logged_values(log.read_bytes(), "comm/cumulative_upload_mb")
    sent = [sum(r["upload_bytes"] for r in rows[: i + 1]) / 1e6 for i in range(len(rows))]
    assert logged == pytest.approx(sent, abs=1e-6)
    accs = logged_values(log.read_bytes(), "eval/eval_accuracy")
    assert accs == pytest.approx([r["eval_accuracy"] for r in rows])
    assert out.name.encode() in log.read_bytes()  # the W&B run is named after the folder


def logged_values(raw: bytes, key: str) -> list[float]:
    """Values of ``key`` in a W&B offline log, in order, each record once."""
    import re

    pattern = re.escape(key.encode()) + rb"\x82\x01(.)"
    values = []
    for m in re.finditer(pattern, raw, re.S):
        text = raw[m.end(): m.end() + m.group(1)[0]]
        values.append(float(text))
    return values[::2] if values[::2] == values[1::2] else values


@pytest.mark.parametrize("args, message", [
    (["--report-to", "mlflow"], "--report-to 'mlflow'"),
    (["--save-every", "-1"], "--save-every must be >= 0"),
    (["--save-payloads", "0"], "round 0 is outside 1..30"),
    (["--save-payloads", "first"], "expected 'all', 'last'"),
    (["--best-metric", "accuracy"], "--best-metric 'accuracy'"),
])
def test_bad_output_flags_exit_2_before_the_folder(args, message, tmp_path, monkeypatch, capsys):
    out = tmp_path / "x"
    monkeypatch.setattr(sys, "argv", ["ecolora", "run", "--out", str(out), "--quiet", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_run_writes_tensorboard_adapters_best_and_payloads(tiny_model_dir, alpaca_file,
                                                          tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "ecolora.cli.main", "run", "--method", "topk-ef",
         "--model", str(tiny_model_dir), "--dataset", str(alpaca_file), "--out", str(out),
         "--report-to", "tensorboard", "--save-every", "2", "--save-best",
         "--save-payloads", "1,last", *FAST],
        capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    name = Path(tiny_model_dir).name

    # the final adapter: portable base model, filled card
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == name
    card = (out / "adapter" / "README.md").read_text()
    assert "`topk-ef`" in card and f"{summary['total_upload_bytes']:,} bytes" in card
    assert "| rounds | 3 |" in card

    # every N rounds, and the best round by eval_accuracy (the first of equals)
    assert sorted(p.name for p in (out / "adapters").iterdir()) == ["round-0002"]
    snap = out / "adapters" / "round-0002"
    assert (snap / "adapter_model.safetensors").stat().st_size > 1000
    assert "| rounds | 2 |" in (snap / "README.md").read_text()
    best = json.loads((out / "adapter-best" / "best.json").read_text())
    accs = [r["eval_accuracy"] for r in rows]
    assert best["value"] == max(accs) and best["round"] == accs.index(max(accs)) + 1
    assert (out / "adapter-best" / "adapter_model.safetensors").is_file()

    # payloads of rounds 1 and 3, one per client: the real uploads (sizes add up to the row)
    for t in (1, 3):
        files = sorted((out / "payloads" / f"round-{t:04d}").glob("client-*.bin"))
        assert len(files) == 3
        assert sum(f.stat().st_size for f in files) == rows[t - 1]["upload_bytes"]
        for f in files:
            shown = CliRunner().invoke(app, ["inspect", str(f)])
            assert shown.exit_code == 0 and "raw int32 positions" in shown.output
            assert f"round {t - 1}, " in shown.output
    assert not (out / "payloads" / "round-0002").exists()

    # tensorboard: one point per round for the curves
    logdir = out / "tensorboard"
    assert [s for s, _ in _scalars(logdir, "eval/eval_accuracy")] == [1, 2, 3]
    assert [v for _, v in _scalars(logdir, "eval/eval_accuracy")] == pytest.approx(accs)
    up = _scalars(logdir, "comm/cumulative_upload_mb")
    assert up[-1][1] == pytest.approx(summary["total_upload_bytes"] / 1e6)
