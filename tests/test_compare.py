"""`ecolora compare` and `ecolora sweep`: report math, end-to-end folders, parity, bad input."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from ecolora.cli.compare import requested_labels
from ecolora.config import NetworkConfig, RunConfig
from ecolora.errors import ConfigError
from ecolora.report.compare import (
    aggregate,
    comm_under,
    compute_class,
    download_notes,
    write_compare,
)
from ecolora.runtime.batch import RunRecord, job_for, parse_label
from ecolora.runtime.network import round_comm_s

FAST = ["--rounds", "2", "--clients", "3", "--quiet", "--set", "eval_examples=16",
        "--set", "train_examples=60", "--set", "eval_every=1", "--set", "local_steps=2"]


def ecolora(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecolora.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=900)


def _run(label, method, seed, acc, up, down, comp, comm, rounds=10, measured=None):
    """A runs.csv row; ``comp`` is its median per-round compute, ``measured`` its summed one."""
    row = {"label": label, "method": method, "seed": seed, "final_accuracy": acc,
           "upload_bytes": up, "download_bytes": down, "total_bytes": up + down,
           "compute_s": comp * rounds if measured is None else measured,
           "compute_round_median_s": comp, "compute_class": compute_class(method),
           "rounds": rounds, "comm_s": comm, "final_loss": 1.0, "best_accuracy": acc}
    row.update({f"comm_s_{p}": comm for p in ("lan", "wan", "mobile")})
    return row


def test_aggregate_means_std_and_ratios_to_fedit():
    runs = [_run("fedit", "fedit", 0, 0.50, 1000, 2000, 1, 10),
            _run("fedit", "fedit", 1, 0.60, 1000, 2000, 1, 30),
            _run("ecolora", "ecolora", 0, 0.52, 100, 2000, 1, 5),
            _run("ecolora", "ecolora", 1, 0.54, 100, 2000, 1, 5),
            _run("ecolora+down", "ecolora", 0, 0.53, 100, 500, 1, 2)]
    table = {r["label"]: r for r in aggregate(runs)}
    assert list(table) == ["fedit", "ecolora", "ecolora+down"]
    f, e = table["fedit"], table["ecolora"]
    assert f["final_accuracy_mean"] == pytest.approx(0.55)
    assert f["final_accuracy_std"] == pytest.approx(math.sqrt(0.005))  # sample std
    assert e["upload_ratio"] == pytest.approx(0.1) and f["upload_ratio"] == 1.0
    assert e["total_bytes_ratio"] == pytest.approx(2100 / 3000)
    assert e["comm_reduction"] == pytest.approx(1 - 5 / 20)
    assert e["total_time_reduction"] == pytest.approx(1 - 15 / 30)
    assert e["accuracy_delta_vs_fedit"] == pytest.approx(-0.02)
    assert table["ecolora+down"]["final_accuracy_std"] == 0.0  # one seed
    notes = download_notes(list(table.values()))
    assert len(notes) == 1 and "75.0% less" in notes[0]
    no_base = aggregate([r for r in runs if r["label"] != "fedit"])
    assert math.isnan(no_base[0]["upload_ratio"])


def test_time_cuts_share_one_compute_measure_per_training_class():
    # ecolora and ecolora+down train identically; a busy machine made one 20x slower. The
    # shared median keeps the cut honest: equal compute, so the cut comes from comm alone.
    runs = [_run("fedit", "fedit", 0, 0.5, 1000, 2000, 1.0, 10, measured=10.0),
            _run("fedit", "fedit", 1, 0.5, 1000, 2000, 1.2, 10, measured=12.0),
            _run("ecolora", "ecolora", 0, 0.5, 100, 2000, 0.9, 6, measured=9.0),
            _run("ecolora", "ecolora", 1, 0.5, 100, 2000, 1.1, 6, measured=11.0),
            _run("ecolora+down", "ecolora", 0, 0.5, 100, 500, 20.0, 2, measured=200.0),
            _run("ffa-lora", "ffa-lora", 0, 0.5, 500, 1000, 0.7, 8, measured=7.0)]
    table = {r["label"]: r for r in aggregate(runs)}
    f, e, d, a = table["fedit"], table["ecolora"], table["ecolora+down"], table["ffa-lora"]
    assert f["compute_class"] == e["compute_class"] == d["compute_class"] != a["compute_class"]
    assert f["compute_round_s"] == e["compute_round_s"] == d["compute_round_s"] == 1.1
    assert f["compute_s"] == e["compute_s"] == d["compute_s"] == pytest.approx(11.0)
    assert a["compute_s"] == pytest.approx(7.0)  # B only: its own measure
    assert d["compute_measured_s"] == 200.0 and e["compute_measured_s"] == 10.0  # kept apart
    assert d["total_s"] == pytest.approx(13.0)
    assert d["total_time_reduction"] == pytest.approx(1 - 13 / 21)
    assert e["total_time_reduction"] == pytest.approx(1 - 17 / 21)
    assert all(r["total_time_reduction"] >= 0 for r in table.values())


def _record(label: str, seed: int, compute: list[float], comm: float = 0.5) -> RunRecord:
    rows = [{"round": t + 1, "train_loss": 1.0 / (t + 1), "eval_loss": 1.0, "eval_accuracy": 0.5,
             "upload_bytes": 1000, "download_bytes": 2000, "upload_nonzeros": 10,
             "upload_bytes_max": 400, "download_bytes_max": 700, "compute_s": c, "comm_s": comm}
            for t, c in enumerate(compute)]
    return RunRecord(job_for(label, RunConfig(), seed), rows, {"eval_accuracy": 0.0}, 1.0)


def test_write_compare_shows_measured_compute_apart(tmp_path):
    records = [_record("fedit", 0, [1.0, 1.0, 1.2]), _record("ecolora", 0, [0.9, 1.1, 1.0]),
               _record("ecolora+down", 0, [20.0, 21.0, 19.0], comm=0.2)]  # a busy machine's run
    meta = {"title": "t", "command": "c", "model": "m", "dataset": "d", "clients": 3,
            "rounds": 3, "seeds": [0], "network": asdict(NetworkConfig()), "network_name": "x"}
    write_compare(tmp_path, records, meta)
    md = (tmp_path / "compare.md").read_text()
    assert "## Time: measured compute, modeled communication" in md
    rows = {r["label"]: r for r in _csv(tmp_path / "compare.csv")}
    assert rows["ecolora"]["compute_s"] == rows["ecolora+down"]["compute_s"] == "3.0"
    assert float(rows["ecolora+down"]["compute_measured_s"]) == pytest.approx(60.0)
    assert float(rows["ecolora+down"]["total_time_reduction"]) > 0  # no "-361%" artefact
    assert (tmp_path / "time_breakdown.png").stat().st_size > 5000


def test_compare_runs_only_the_methods_asked():
    assert requested_labels("fedit,ecolora") == ["fedit", "ecolora"]
    assert requested_labels("fedit,ecolora", down=True) == ["fedit", "ecolora", "ecolora+down"]
    assert requested_labels("ecolora,ecolora+down", down=True) == ["ecolora", "ecolora+down"]
    assert requested_labels("fedit", down=True) == ["fedit"]


def test_comm_under_reproduces_the_round_model():
    rows = [{"upload_bytes_max": 20_000, "download_bytes_max": 350_000},
            {"upload_bytes_max": 15_000, "download_bytes_max": 170_000}]
    net = NetworkConfig(uplink_mbps=5, downlink_mbps=20, latency_ms=30)
    want = round_comm_s([20_000, 9], [350_000], net) + round_comm_s([15_000], [170_000, 5], net)
    assert comm_under(rows, net) == pytest.approx(want)
    assert comm_under([{"upload_bytes": 1}], net) is None


def test_labels_and_jobs():
    assert parse_label("ecolora") == ("ecolora", {})
    assert parse_label("topk-ef+down") == ("topk-ef", {"compress": {"compress_download": True}})
    with pytest.raises(ConfigError, match="suffix"):
        parse_label("ecolora+up")
    job = job_for("ecolora+down", RunConfig(), 4, value=2, extra={"compress": {"num_segments": 4}})
    assert job.cfg.method == "ecolora" and job.cfg.fed.seed == 4 and job.value == 2
    assert job.cfg.compress.compress_download and job.cfg.compress.num_segments == 4


def _csv(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_compare_end_to_end_and_parity_with_run(tiny_model_dir, alpaca_file, tmp_path):
    out = tmp_path / "cmp"
    # two worker processes, each building its own setup: rows must still equal a fresh run's
    res = ecolora("compare", "--methods", "fedit,ecolora,ecolora+down", "--seeds", "2",
                  "--network", "mobile",
                  "--model", tiny_model_dir, "--dataset", alpaca_file, "--out", out,
                  "--workers", "2", *FAST)
    assert res.returncode == 0, res.stderr
    for name in ("compare.md", "compare.csv", "runs.csv", "acc_vs_upload.png",
                 "loss_vs_round.png", "time_breakdown.png"):
        assert (out / name).stat().st_size > 200, name
    table = {r["label"]: r for r in _csv(out / "compare.csv")}
    assert list(table) == ["fedit", "ecolora", "ecolora+down"]  # exactly what was asked
    assert float(table["fedit"]["upload_ratio"]) == 1.0
    assert float(table["ecolora"]["upload_ratio"]) < 0.5
    down = {k: float(v["download_bytes"]) for k, v in table.items()}
    assert down["ecolora+down"] < down["ecolora"]
    assert table["fedit"]["seeds"] == "2"
    md = (out / "compare.md").read_text()
    assert "5/20 Mbit/s" in md and "compress_download" in md and "| ecolora |" in md
    assert "measured compute s" in md and "comm s (modeled)" in md
    assert table["ecolora"]["compute_s"] == table["ecolora+down"]["compute_s"]  # shared
    runs = _csv(out / "runs.csv")
    assert {(r["label"], r["seed"]) for r in runs} == {
        (m, s) for m in table for s in ("0", "1")}
    # the shared setup must not leak between methods: a fresh `ecolora run` gives the same rows
    single = tmp_path / "single"
    res = ecolora("run", "--method", "ecolora", "--seed", "1", "--network", "mobile",
                  "--model", tiny_model_dir, "--dataset", alpaca_file, "--out", single, *FAST)
    assert res.returncode == 0, res.stderr

    def rows(path: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "compute_s"}
                for line in path.read_text().splitlines()]

    assert rows(single / "metrics.jsonl") == rows(out / "runs" / "ecolora-seed1" / "metrics.jsonl")


def test_sweep_end_to_end(tiny_model_dir, alpaca_file, tmp_path):
    out = tmp_path / "sw"
    res = ecolora("sweep", "--axis", "segments", "--values", "1,2", "--methods", "fedit,ecolora",
                  "--seeds", "1", "--model", tiny_model_dir, "--dataset", alpaca_file,
                  "--out", out, *FAST)
    assert res.returncode == 0, res.stderr
    assert (out / "sweep_segments.png").stat().st_size > 10_000
    table = _csv(out / "sweep_segments.csv")
    assert [(r["value"], r["label"]) for r in table] == [
        ("1", "fedit"), ("1", "ecolora"), ("2", "fedit"), ("2", "ecolora")]
    up = {(r["value"], r["label"]): float(r["upload_bytes"]) for r in table}
    assert up[("1", "fedit")] == up[("2", "fedit")]  # FedIT ignores the segment knob
    # the byte budget (compress.upload_budget) sets the bytes, whatever S is
    assert all(up[(v, "ecolora")] < 0.15 * up[(v, "fedit")] for v in ("1", "2"))
    assert 0.8 < up[("2", "ecolora")] / up[("1", "ecolora")] < 1.25
    assert "| 2 | ecolora |" in (out / "sweep_segments.md").read_text()
    assert (out / "runs" / "segments=2" / "ecolora-seed0" / "metrics.jsonl").is_file()


@pytest.mark.parametrize("args, message", [
    (["compare", "--methods", "fedit,nope"], "unknown method 'nope'"),
    (["compare", "--network", "satellite"], "unknown network preset"),
    (["compare", "--seeds", "0"], "--seeds must be >= 1"),
    (["compare", "--workers", "0"], "--workers must be >= 1"),
    (["compare", "--methods", "ecolora+up"], "suffix"),
    (["sweep", "--axis", "bogus", "--values", "1"], "unknown sweep axis"),
    (["sweep", "--axis", "clients", "--values", "0"], "`clients` must be >= 1"),
])
def test_bad_input_is_one_line_exit_2(args, message, tmp_path):
    res = ecolora(*args, "--out", tmp_path / "x", "--quiet")
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
