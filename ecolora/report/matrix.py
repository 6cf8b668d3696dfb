"""Tables of the robustness matrix: matrix.md, matrix.csv and runs.csv (written atomically).

Each row of the grid is one setting (model, data, knobs); each method in it is compared with
FedIT on the same seeds, because only a same-seed comparison shares data, partition, LoRA init
and batches. The issue's done-criteria are checked per row and method and listed at the top of
matrix.md, so a regression is read in one place instead of hunted across tables:

- close: the final metric (mean over seeds) within 1 point of FedIT's (accuracy, percentage
  points) or within 1% of it (eval loss, relative; lower is better);
- upload: the whole-run upload, warm-up rounds included, at most 10% of FedIT's;
- floor: never below 90% of FedIT's metric (for a loss: at most FedIT's / 0.9).

"Reach" is when a method first matches FedIT's *final* metric of the same seed (with the same
1 point / 1% slack), and how many upload bytes it had spent by then, as a share of FedIT's
whole run: what a user saves by stopping at FedIT quality. Only evaluated rounds count
(every ``fed.eval_every`` and the last), so a reach round is an upper bound within that step.
"""

from __future__ import annotations

import math
from pathlib import Path

from ecolora.report.compare import _std, csv_text
from ecolora.report.results import atomic_write
from ecolora.runtime.batch import RunRecord

BASELINE = "fedit"
CLOSE_POINTS = 0.01  # accuracy slack: 1 percentage point (metrics are fractions)
CLOSE_REL = 0.01  # loss slack: 1% relative
MAX_UPLOAD_SHARE = 0.10
FLOOR = 0.90


def digest(rec: RunRecord, row: str, label: str, seed: int, key: str, reused: bool) -> dict:
    """One run's numbers for the matrix (a line of runs.csv) and its eval curve."""
    rows = rec.rows
    cum, curve = 0, []
    for r in rows:
        cum += r["upload_bytes"]
        if "eval_accuracy" in r:
            curve.append((r["round"], cum, r["eval_accuracy"], r["eval_loss"]))
    return {"row": row, "label": label, "method": rec.job.cfg.method, "seed": seed,
            "rounds": len(rows),
            "final_accuracy": curve[-1][2] if curve else math.nan,
            "final_loss": curve[-1][3] if curve else math.nan,
            "upload_bytes": cum, "download_bytes": sum(r["download_bytes"] for r in rows),
            "wall_s": rec.wall_s, "run": key, "reused": reused, "curve": curve}


def final(run: dict, metric: str) -> float:
    return run["final_accuracy"] if metric == "accuracy" else run["final_loss"]


def meets(value: float, target: float, metric: str) -> bool:
    """Whether ``value`` matches ``target`` with the close-criterion slack."""
    if metric == "accuracy":
        return value >= target - CLOSE_POINTS - 1e-12
    return value <= target * (1 + CLOSE_REL) + 1e-12


def reach(run: dict, base: dict, metric: str) -> tuple[int | None, float | None]:
    """(first evaluated round matching ``base``'s final metric, upload spent by then as a share
    of ``base``'s whole-run upload); (None, None) if never."""
    target = final(base, metric)
    for round_, cum, acc, loss in run["curve"]:
        if meets(acc if metric == "accuracy" else loss, target, metric):
            share = cum / base["upload_bytes"] if base["upload_bytes"] else math.nan
            return round_, share
    return None, None


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def delta(mean: float, base_mean: float, metric: str) -> float:
    """Difference from FedIT: points for accuracy, percent (relative) for a loss."""
    if metric == "accuracy":
        return 100 * (mean - base_mean)
    return 100 * (mean / base_mean - 1) if base_mean else math.nan


def criteria(mean: float, base_mean: float, upload_share: float, metric: str) -> dict:
    """The three done-criteria of the issue as booleans."""
    if metric == "accuracy":
        floor = mean >= FLOOR * base_mean - 1e-12
    else:
        floor = mean <= base_mean / FLOOR + 1e-12
    close = meets(mean, base_mean, metric)
    upload = upload_share <= MAX_UPLOAD_SHARE + 1e-12
    return {"pass_close": close, "pass_upload": upload, "pass_floor": floor,
            "pass_all": close and upload and floor}


def row_table(row: str, family: str, metric: str, runs: list[dict]) -> list[dict]:
    """One line per method of ``row``: means over seeds and, for non-FedIT methods, the
    comparison with the FedIT runs of the same seeds (absent FedIT -> NaN and no verdict)."""
    base = {r["seed"]: r for r in runs if r["label"] == BASELINE}
    labels = list(dict.fromkeys(r["label"] for r in runs))
    out = []
    for label in labels:
        rs = [r for r in runs if r["label"] == label]
        vals = [final(r, metric) for r in rs]
        line = {"family": family, "row": row, "metric": metric, "label": label,
                "method": rs[0]["method"], "seeds": len(rs), "rounds": rs[0]["rounds"],
                "metric_mean": _mean(vals), "metric_std": _std(vals),
                "final_accuracy_mean": _mean([r["final_accuracy"] for r in rs]),
                "final_accuracy_std": _std([r["final_accuracy"] for r in rs]),
                "final_loss_mean": _mean([r["final_loss"] for r in rs]),
                "final_loss_std": _std([r["final_loss"] for r in rs]),
                "upload_bytes": _mean([r["upload_bytes"] for r in rs]),
                "download_bytes": _mean([r["download_bytes"] for r in rs])}
        paired = [(r, base[r["seed"]]) for r in rs if r["seed"] in base]
        cmp = _compare(line, paired, metric) if paired and label != BASELINE else {}
        out.append(line | _EMPTY | cmp)
    return out


_EMPTY = {"fedit_metric_mean": math.nan, "delta": math.nan, "delta_unit": "", "upload_share":
          math.nan, "download_share": math.nan, "reach_round_mean": math.nan, "reach_never": "",
          "reach_upload_share": math.nan, "pass_close": "", "pass_upload": "",
          "pass_floor": "", "pass_all": ""}


def _compare(line: dict, paired: list[tuple[dict, dict]], metric: str) -> dict:
    mine = _mean([final(r, metric) for r, _ in paired])
    theirs = _mean([final(b, metric) for _, b in paired])
    up = _mean([b["upload_bytes"] for _, b in paired])
    down = _mean([b["download_bytes"] for _, b in paired])
    share = _mean([r["upload_bytes"] for r, _ in paired]) / up if up else math.nan
    reached = [reach(r, b, metric) for r, b in paired]
    hit = [x for x in reached if x[0] is not None]
    return {"fedit_metric_mean": theirs, "delta": delta(mine, theirs, metric),
            "delta_unit": "pt" if metric == "accuracy" else "%",
            "upload_share": share,
            "download_share": _mean([r["download_bytes"] for r, _ in paired]) / down
            if down else math.nan,
            "reach_round_mean": _mean([float(x[0]) for x in hit]),
            "reach_never": len(reached) - len(hit),
            "reach_upload_share": _mean([x[1] for x in hit]),
            **criteria(mine, theirs, share, metric)}


def misses(table: list[dict]) -> list[str]:
    """Plain sentences, one per row and method missing a done-criterion."""
    out = []
    for t in table:
        if t["pass_all"] is not False:
            continue
        why = []
        if not t["pass_close"]:
            slack = "1 point" if t["metric"] == "accuracy" else "1%"
            why.append(f"final {_metric(t['metric_mean'], t['metric'])} against FedIT's "
                       f"{_metric(t['fedit_metric_mean'], t['metric'])} "
                       f"({_delta(t)}, more than {slack} worse)")
        if not t["pass_upload"]:
            why.append(f"upload {_pct(t['upload_share'])} of FedIT's (over 10%)")
        if not t["pass_floor"]:
            why.append("below 90% of FedIT's metric")
        out.append(f"- `{t['row']}` / {t['label']}: " + "; ".join(why) + ".")
    return out


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _metric(x: float, metric: str) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{100 * x:.1f}%" if metric == "accuracy" else f"{x:.4f}"


def _pm(mean: float, std: float, metric: str) -> str:
    if math.isnan(mean):
        return "n/a"
    if metric == "accuracy":
        return f"{100 * mean:.1f} ± {100 * std:.1f}%"
    return f"{mean:.4f} ± {std:.4f}"


def _delta(t: dict) -> str:
    return "—" if math.isnan(t["delta"]) else f"{t['delta']:+.1f} {t['delta_unit']}"


def _flag(x: object) -> str:
    return "yes" if x is True else "**no**" if x is False else "—"


def _reach(t: dict) -> str:
    if t["reach_never"] == "":
        return "— | —"
    r = "never" if math.isnan(t["reach_round_mean"]) else f"{t['reach_round_mean']:.1f}"
    never = f" ({t['reach_never']} never)" if t["reach_never"] and r != "never" else ""
    return f"{r}{never} | {_pct(t['reach_upload_share'])}"


def markdown(table: list[dict], meta: dict) -> str:
    """matrix.md: the misses first, then one section (table + plot) per family."""
    lines = [f"# {meta['title']}", "", f"Command: `{meta['command']}` (grid `{meta['grid']}`, "
             f"seeds {meta['seeds']}).", "",
             "Criteria per row and method, against FedIT on the same seeds: final metric "
             "(mean over seeds) within 1 point of FedIT's (accuracy) or within 1% (eval loss, "
             "lower is better); whole-run upload, warm-up included, at most 10% of FedIT's; "
             "never below 90% of FedIT's metric (for a loss: at most FedIT's / 0.9).", ""]
    bad = misses(table)
    checked = [t for t in table if t["pass_all"] != ""]
    if bad:
        lines += [f"**{len(bad)} of {len(checked)} row/method pairs miss a criterion:**", ""]
        lines += bad
    elif checked:
        lines.append(f"All {len(checked)} row/method pairs meet the three criteria.")
    else:
        lines.append("No row has a FedIT baseline, so no criterion was checked.")
    lines += ["", "Columns: final accuracy (exact match, or preference accuracy for DPO) and "
              "final eval loss (DPO loss for DPO), mean ± sample std over seeds; Δ vs FedIT in "
              "points (accuracy rows) or % relative (loss rows); upload and download as a "
              "share of FedIT's whole run; reach: mean first evaluated round at FedIT's final "
              "metric of the same seed, with the upload spent by then as a share of FedIT's "
              "whole run."]
    for fam in dict.fromkeys(t["family"] for t in table):
        lines += ["", f"## {fam}", "",
                  "| row | metric | method | final accuracy | final eval loss | Δ vs FedIT "
                  "| upload MB | upload / FedIT | download / FedIT | reach round | reach upload "
                  "/ FedIT | within 1 | upload ≤ 10% | ≥ 90% |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for t in (t for t in table if t["family"] == fam):
            lines.append(
                f"| {t['row']} | {t['metric']} | {t['label']} "
                f"| {_pm(t['final_accuracy_mean'], t['final_accuracy_std'], 'accuracy')} "
                f"| {_pm(t['final_loss_mean'], t['final_loss_std'], 'loss')} | {_delta(t)} "
                f"| {t['upload_bytes'] / 1e6:.3f} | {_pct(t['upload_share'])} "
                f"| {_pct(t['download_share'])} | {_reach(t)} | {_flag(t['pass_close'])} "
                f"| {_flag(t['pass_upload'])} | {_flag(t['pass_floor'])} |")
        lines += ["", f"Plot: `matrix_{slug(fam)}.png`."]
    lines += ["", "Per-run numbers: `runs.csv`; per-round metrics and configs: "
              "`runs/<hash>/` (`config.json` names the run).", ""]
    return "\n".join(lines)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_tables(out: Path, table: list[dict], runs: list[dict], meta: dict) -> list[Path]:
    files = {"matrix.md": markdown(table, meta), "matrix.csv": csv_text(table),
             "runs.csv": csv_text([{k: v for k, v in r.items() if k != "curve"} for r in runs])}
    for name, text in files.items():
        atomic_write(out / name, lambda fh, t=text: fh.write(t))
    return [out / n for n in files]
