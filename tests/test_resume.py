"""Checkpoints and resume: an interrupted run continues to the same metrics; bad checkpoints
are one-line errors; the final adapter is a peft folder that loads with the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ecolora.runtime.driver as driver
from ecolora.config import RunConfig
from ecolora.runtime.checkpoint import FILENAME, load_checkpoint
from ecolora.train.model import load_model, set_params

TIMING = {"compute_s", "comm_s", "wall_s"}


def job(model: Path, data: Path, out: Path, every: int) -> list[object]:
    return ["run", "--model", model, "--dataset", data, "--out", out, "--rounds", 5,
            "--clients", 3, "--quiet", "--set", "eval_examples=8", "--set", "train_examples=60",
            "--set", "local_steps=2", "--set", "eval_every=2", "--set", "lora_dropout=0.1",
            "--set", f"checkpoint_every={every}", "--set", "eval_samples=2",
            "--set", "max_new_tokens=4", "--set", "participation=0.67"]  # 2 of 3 per round:
    # clients miss rounds: stale residuals (compress.stale_decay) and full-state resyncs, whose
    # size depends on the current adapter, must come out the same after a resume


def rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, alpaca_file, tmp_path_factory, run_cli) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert run_cli(*job(tiny_model_dir, alpaca_file, out, 1)) == 0
    return out


def interrupt_after(monkeypatch: pytest.MonkeyPatch, rounds_done: int) -> None:
    """Make the server fail in round ``rounds_done + 1`` as if the process were killed."""
    real = driver.server_round

    def server_round(method, uploads, round_, *args):
        if round_ == rounds_done:
            raise KeyboardInterrupt
        return real(method, uploads, round_, *args)

    monkeypatch.setattr(driver, "server_round", server_round)


@pytest.mark.parametrize("every", [1, 2])
def test_resume_gives_the_uninterrupted_metrics(every, reference, tiny_model_dir, alpaca_file,
                                                run_cli, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        interrupt_after(m, 3)
        assert run_cli(*job(tiny_model_dir, alpaca_file, out, every)) == 130
    assert len(rows(out / "metrics.jsonl")) == 3
    saved = json.loads((out / "config.json").read_text())
    state = load_checkpoint(out / FILENAME, RunConfig.from_dict(saved), _names(out))
    assert state.round == (3 if every == 1 else 2)
    assert run_cli("run", "--resume", out, "--quiet") == 0
    expected = rows(reference / "metrics.jsonl")
    assert [r["round"] for r in expected] == [1, 2, 3, 4, 5]
    assert rows(out / "metrics.jsonl") == expected
    assert rows(out / "samples.jsonl") == rows(reference / "samples.jsonl")
    ours = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    assert ours == (reference / "adapter" / "adapter_model.safetensors").read_bytes()


def _names(out: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(out / FILENAME), framework="np") as fh:
        return json.loads(fh.metadata()["ecolora"])["layout"]


def test_changed_options_on_resume_are_refused(reference, capsys, run_cli):
    assert run_cli("run", "--resume", reference, "--rounds", 6, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume") and "fed.rounds: 5 there, 6 here" in err
    assert "\n" not in err
    assert run_cli("run", "--resume", reference / "nope", "--quiet") == 2
    assert "not a run folder" in capsys.readouterr().err


def test_mismatched_checkpoint(reference, tmp_path, capsys, run_cli):
    out = tmp_path / "copy"
    out.mkdir()
    (out / FILENAME).write_bytes((reference / FILENAME).read_bytes())
    cfg = json.loads((reference / "config.json").read_text())
    cfg["fed"]["lr"] = 0.5
    (out / "config.json").write_text(json.dumps(cfg))
    assert run_cli("run", "--resume", out, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert "was written by a different config (fed.lr: 0.01 there, 0.5 here)" in err
    assert "\n" not in err


@pytest.mark.parametrize("damage", ["truncate", "garble_header", "empty"])
def test_corrupt_checkpoint(damage, reference, tmp_path, capsys, run_cli):
    out = tmp_path / "copy"
    out.mkdir()
    data = (reference / FILENAME).read_bytes()
    data = {"truncate": data[: len(data) // 2], "garble_header": data[:8] + b"{" * 40 + data[48:],
            "empty": b""}[damage]
    (out / FILENAME).write_bytes(data)
    (out / "config.json").write_text((reference / "config.json").read_text())
    assert run_cli("run", "--resume", out, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "corrupt checkpoint" in err and "\n" not in err


def test_exported_adapter_loads_in_peft_with_the_same_logits(reference):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = reference / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in
                                                                    adapter.iterdir()}
    cfg = RunConfig.from_dict(json.loads((reference / "config.json").read_text()))
    state = load_checkpoint(reference / FILENAME, cfg, _names(reference))
    assert state.round == 5
    ours, tok = load_model(cfg.model, cfg.fed.seed)
    set_params(ours, state.params)
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, adapter).eval()
    ids = torch.tensor([tok("Q: add 1 abc\nA: ")["input_ids"]])
    with torch.no_grad():
        want = ours.eval()(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
        with loaded.disable_adapter():
            plain = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, want)
    assert not torch.allclose(plain, want)  # the adapter is not a no-op
    assert np.isfinite(got.numpy()).all()
