"""`ecolora matrix`: grid validation, the comparison math, the run cache, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ecolora.errors import ConfigError
from ecolora.report.matrix import criteria, delta, misses, reach, row_table
from ecolora.report.matrix_grid import load_grid, parse_grid, plan, run_key, select

ROOT = Path(__file__).resolve().parent.parent
TINY = {"fed": {"rounds": 2, "clients": 2, "local_steps": 1, "eval_every": 1},
        "data": {"train_examples": 32, "eval_examples": 8, "eval_samples": 0}}
TINY_TOML = """
title = "tiny"
[defaults]
fed = {rounds = 2, clients = 2, local_steps = 1, eval_every = 1}
data = {train_examples = 32, eval_examples = 8, eval_samples = 0}
[[row]]
name = "a"
family = "fam"
[[row]]
name = "b"
family = "fam"
metric = "loss"
methods = ["ecolora"]
baseline_from = "a"
set = {compress = {num_segments = 2}}
"""


def grid(*rows: dict, defaults: dict | None = None, **top) -> dict:
    return {"defaults": TINY if defaults is None else defaults, "row": list(rows), **top}


# --- grid parsing and validation ------------------------------------------------------------

def test_grid_parses_rows_methods_and_defaults():
    g = parse_grid(grid({"name": "a", "family": "f", "set": {"fed": {"rounds": 3}}},
                        {"name": "b", "methods": ["ecolora", {"label": "m0", "method": "ecolora",
                                                              "set": {"compress": {"rho_b": 0.1}}}],
                         "baseline_from": "a", "set": {"fed": {"rounds": 3},
                                                       "compress": {"num_segments": 2}}}))
    a, b = g.rows
    assert (a.name, a.family, a.metric, a.cfg.fed.rounds, a.cfg.fed.clients) == ("a", "f",
                                                                                  "accuracy", 3, 2)
    assert [m.label for m in a.methods] == ["fedit", "ecolora"]
    assert b.family == "rows" and b.baseline_row == "a" and a.baseline_row == "a"
    uses, jobs = plan(g, g, seeds=2)
    # a: fedit, ecolora; b: borrowed fedit (same run as a's), ecolora, m0 -> 5 uses per seed
    assert len(uses) == 10 and len(jobs) == 8
    m0 = next(j for j in jobs.values() if j.label == "m0")
    assert m0.cfg.compress.rho_b == 0.1 and m0.cfg.compress.num_segments == 2
    assert {u.seed for u in uses} == {0, 1}


@pytest.mark.parametrize("raw, match", [
    (grid({"name": "a", "familly": "f"}), "unknown row key 'familly'; did you mean 'family'"),
    (grid({"name": "a"}, {"name": "a"}), "two rows are named 'a'"),
    (grid({"name": "a", "metric": "rouge"}), "`metric` must be one of accuracy, loss"),
    (grid({"name": "a", "methods": ["ecolora"], "baseline_from": "zz"}),
     "unknown baseline_from row 'zz'"),
    (grid({"name": "a", "methods": ["ecolora"]},
          {"name": "b", "methods": ["ecolora"], "baseline_from": "a"}), "does not run fedit"),
    (grid({"name": "a"}, {"name": "b", "methods": ["ecolora"], "baseline_from": "a",
                          "set": {"fed": {"rounds": 3}}}), "differs in fed.rounds"),
    (grid({"name": "a", "baseline_from": "a"}), "runs fedit itself"),
    (grid({"name": "a", "set": {"fed": {"roundz": 3}}}), "row 'a': unknown knob 'roundz'"),
    (grid({"name": "a", "methods": ["ecolra"]}), "unknown method 'ecolra'"),
    (grid({"name": "a", "methods": [{"method": "ecolora", "sett": {}}]}), "unknown method key"),
    (grid({"name": "a", "methods": ["ecolora", "ecolora"]}), "appears twice"),
    (grid({"name": "a"}, defaults={"fedd": {}}), r"\[defaults\]: unknown section 'fedd'"),
    (grid({"name": "a"}, rowz=[]), "unknown key 'rowz'; did you mean 'row'"),
    ({"defaults": TINY}, "no \\[\\[row\\]\\] entries"),
])
def test_grid_errors_are_one_line(raw, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_grid(raw)
    assert "\n" not in str(err.value)


def test_select_rows_and_families():
    g = parse_grid(grid({"name": "a", "family": "x"}, {"name": "b", "family": "y"}))
    assert [r.name for r in select(g, ["b"], None).rows] == ["b"]
    assert [r.name for r in select(g, None, ["x"]).rows] == ["a"]
    with pytest.raises(ConfigError, match="unknown row 'c'"):
        select(g, ["c"], None)
    with pytest.raises(ConfigError, match="select no row"):
        select(g, ["a"], ["y"])


def test_run_key_follows_the_whole_config():
    g = parse_grid(grid({"name": "a"}, {"name": "b"}))
    uses, jobs = plan(g, g, seeds=1)
    assert len(uses) == 4 and len(jobs) == 2  # identical rows share their runs
    keys = {u.key for u in uses}
    job = next(iter(jobs.values()))
    assert run_key(job.cfg) in keys and len(run_key(job.cfg)) == 16


def test_shipped_grid_parses():
    raw_path = ROOT / "benchmarks" / "robustness.toml"
    g = load_grid(raw_path)
    names = [r.name for r in g.rows]
    for want in ("embedded-30", "embedded-10", "dolly-10", "dolly-30", "hh-dpo", "S1", "S2",
                 "S4", "S8", "participation-0.3", "alpha-0.1", "clients-50"):
        assert want in names
    assert g.families == ["embedded", "realtext", "segments", "axes"]
    assert g.row("hh-dpo").cfg.fed.objective == "dpo" and g.row("dolly-10").metric == "loss"
    assert all(g.row(s).baseline_from == "S2" for s in ("S1", "S4", "S8"))
    uses, jobs = plan(g, g, seeds=3)
    # 12 rows x 3 seeds: FedIT on 9 rows (S1/S4/S8 borrow S2's runs), ecolora on 12
    assert len(uses) == 72 and len(jobs) == 63


def test_shipped_grid_model_and_files_exist(monkeypatch):
    import ecolora.train.model as model_mod
    from ecolora.cli.matrix import preflight

    g = load_grid(ROOT / "benchmarks" / "robustness.toml")
    if not (model_mod.REALTEXT_BASE_DIR / "config.json").is_file():
        pytest.skip("realtext base not built: the realtext rows' model is not checked")
    monkeypatch.chdir(ROOT)  # data paths resolve against the repo root, as documented
    if not Path(g.row("dolly-10").cfg.data.dataset).is_file():
        pytest.skip("shared data files absent: the realtext rows' files are not checked")
    preflight(list(g.rows))


# --- the comparison math, on hand-made runs -------------------------------------------------

def run(label, seed, curve, up, down=1000, method=None):
    """A digest as report.matrix.digest makes it; curve = [(round, cum_upload, acc, loss)]."""
    return {"label": label, "method": method or label, "seed": seed, "rounds": curve[-1][0],
            "final_accuracy": curve[-1][2], "final_loss": curve[-1][3], "upload_bytes": up,
            "download_bytes": down, "curve": curve}


def test_reach_accuracy_and_loss():
    base = run("fedit", 0, [(5, 500, 0.50, 2.0), (10, 1000, 0.80, 1.0)], 1000)
    eco = run("ecolora", 0, [(5, 30, 0.795, 1.5), (10, 60, 0.85, 1.009)], 60)
    assert reach(eco, base, "accuracy") == (5, pytest.approx(0.03))  # 79.5 >= 80 - 1
    assert reach(eco, base, "loss") == (10, pytest.approx(0.06))  # 1.009 <= 1.0 * 1.01
    slow = run("ecolora", 0, [(5, 30, 0.70, 1.5), (10, 60, 0.78, 1.02)], 60)
    assert reach(slow, base, "accuracy") == (None, None)
    assert reach(slow, base, "loss") == (None, None)


def test_delta_and_criteria():
    assert delta(0.80, 0.82, "accuracy") == pytest.approx(-2.0)  # points
    assert delta(1.05, 1.00, "loss") == pytest.approx(5.0)  # % relative
    ok = criteria(0.815, 0.82, 0.09, "accuracy")
    assert ok == {"pass_close": True, "pass_upload": True, "pass_floor": True, "pass_all": True}
    bad = criteria(0.70, 0.82, 0.11, "accuracy")
    assert not bad["pass_close"] and not bad["pass_upload"] and not bad["pass_floor"]
    assert criteria(0.75, 0.82, 0.05, "accuracy")["pass_floor"]  # 0.75 >= 0.9 * 0.82
    loss = criteria(1.10, 1.00, 0.05, "loss")
    assert not loss["pass_close"] and loss["pass_floor"]  # 1.10 <= 1.0 / 0.9
    assert not criteria(1.12, 1.00, 0.05, "loss")["pass_floor"]


def test_row_table_pairs_seeds_with_fedit():
    runs = [run("fedit", 0, [(5, 500, 0.6, 2.0), (10, 1000, 0.80, 1.0)], 1000, down=2000),
            run("fedit", 1, [(5, 500, 0.6, 2.0), (10, 1000, 0.90, 1.0)], 1000, down=2000),
            run("ecolora", 0, [(5, 40, 0.79, 1.5), (10, 80, 0.82, 0.9)], 80, down=1000),
            run("ecolora", 1, [(5, 40, 0.50, 1.5), (10, 120, 0.86, 0.9)], 120, down=1000)]
    fedit, eco = row_table("r", "fam", "accuracy", runs)
    assert fedit["upload_share"] != fedit["upload_share"] and fedit["pass_all"] == ""
    assert eco["metric_mean"] == pytest.approx(0.84)
    assert eco["metric_std"] == pytest.approx(math.sqrt(0.0008))
    assert eco["fedit_metric_mean"] == pytest.approx(0.85)
    assert eco["delta"] == pytest.approx(-1.0) and eco["delta_unit"] == "pt"
    assert eco["upload_share"] == pytest.approx(0.1) and eco["download_share"] == 0.5
    # seed 0 reaches 79% >= 80 - 1 at round 5 (40 B = 4%); seed 1 ends at 86 < 89: never
    assert eco["reach_round_mean"] == 5 and eco["reach_never"] == 1
    assert eco["reach_upload_share"] == pytest.approx(0.04)
    assert eco["pass_close"] and eco["pass_upload"] and eco["pass_floor"]
    eco_loss = row_table("r", "fam", "loss", runs)[1]
    assert eco_loss["delta"] == pytest.approx(-10.0) and eco_loss["delta_unit"] == "%"
    assert eco_loss["reach_round_mean"] == 10 and eco_loss["reach_never"] == 0
    worse = [dict(r, label="x") for r in runs[2:]]
    worse[0]["upload_bytes"] = 500
    line = row_table("r", "fam", "accuracy", runs[:2] + worse)[1]
    assert line["upload_share"] == pytest.approx(0.31) and line["pass_all"] is False
    assert misses([line]) == ["- `r` / x: upload 31.0% of FedIT's (over 10%)."]
    lone = row_table("r", "fam", "accuracy", runs[2:])[0]  # no FedIT: no verdict
    assert lone["pass_all"] == "" and math.isnan(lone["delta"])


# --- the CLI end to end, and the cache ------------------------------------------------------

def test_matrix_end_to_end_and_cache(tmp_path: Path):
    from ecolora.cli.matrix import run_matrix

    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML, encoding="utf-8")
    out = tmp_path / "out"
    said: list[str] = []
    first = run_matrix(path, seeds=1, out=out, quiet=True, echo=said.append)
    assert (first["runs"], first["reused"], first["ran"]) == (3, 0, 3)
    assert said == [f"3 runs: 0 reused from {out / 'runs'}, 3 to run"]
    for name in ("matrix.md", "matrix.csv", "runs.csv", "matrix_fam.png"):
        assert (out / name).stat().st_size > 0
    assert len(list((out / "runs").glob("*/config.json"))) == 3
    rows = list(csv.DictReader((out / "matrix.csv").open()))
    assert [(r["row"], r["label"]) for r in rows] == [("a", "fedit"), ("a", "ecolora"),
                                                      ("b", "fedit"), ("b", "ecolora")]
    md = (out / "matrix.md").read_text()
    assert "## fam" in md and "| b | loss | ecolora |" in md
    table = (out / "matrix.csv").read_text()

    def body(md: str) -> list[str]:  # all but the command line, which names the invocation
        return [line for line in md.splitlines() if not line.startswith("Command:")]

    md_lines = body(md)
    proc = subprocess.run([sys.executable, "-m", "ecolora.cli.main", "matrix", "--grid",
                           str(path), "--seeds", "1", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"3 runs: 3 reused from {out / 'runs'}, 0 to run" in proc.stdout
    assert f"report: {out / 'matrix.md'}" in proc.stdout
    assert (out / "matrix.csv").read_text() == table
    assert body((out / "matrix.md").read_text()) == md_lines


def test_cli_bad_grid_exits_2_with_one_line(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('[[row]]\nname = "a"\nmetrc = "loss"\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "ecolora.cli.main", "matrix", "--grid",
                           str(path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: row 'a': unknown row key 'metrc'; did you mean 'metric'?"]
    assert not (tmp_path / "o").exists()


def test_missing_data_file_fails_before_any_run(tmp_path: Path):
    from ecolora.cli.matrix import run_matrix

    path = tmp_path / "g.toml"
    path.write_text(TINY_TOML + '[[row]]\nname = "c"\nfamily = "files"\n'
                    'set = {data = {dataset = "nowhere/missing.jsonl"}}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="row 'c': data file not found: nowhere/missing.jsonl"):
        run_matrix(path, seeds=1, out=tmp_path / "o", quiet=True, echo=lambda s: None)
    assert not (tmp_path / "o").exists()
    # --families leaves that row out, so its file is not needed (checked, then nothing runs)
    g = select(load_grid(path), None, ["fam"])
    assert [r.name for r in g.rows] == ["a", "b"]


def test_partial_or_foreign_run_folders_are_not_reused(tmp_path: Path):
    from ecolora.cli.matrix import load_cached

    g = parse_grid(grid({"name": "a"}))
    _, jobs = plan(g, g, seeds=1)
    job = next(iter(jobs.values()))
    (tmp_path / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2}\n')
    assert load_cached(tmp_path, job) is None  # no summary.json: the run did not finish
    other = next(j for j in jobs.values() if j is not job)
    (tmp_path / "summary.json").write_text(json.dumps(
        {"config": other.cfg.to_dict(), "wall_time_s": 1.0}))
    assert load_cached(tmp_path, job) is None  # another config (a hash collision, a bad copy)
    assert load_cached(tmp_path, other).rows == [{"round": 1}, {"round": 2}]
