"""Tables of a method comparison: compare.md, compare.csv and runs.csv (written atomically).

Both directions are counted, as FlowerTune's communication budget does: the EcoLoRA paper
reports upload savings (spec §2, §4.5: downloads are dense), so the tables show upload, download
and their sum, and, when a ``METHOD+down`` run (``compress.compress_download``: sparse global
deltas, spec Q6) sits beside ``METHOD``, what that knob saves in total. Times follow spec §9:
communication is modeled by ``runtime.network`` under the run's link and, from the same byte
counts, under each preset; compute is measured (per round the slowest client).

Measured compute is noise on a shared machine: ``ecolora`` and ``ecolora+down`` train exactly the
same way, yet once differed 20x and printed a "-361%" total-time cut. So time cuts never use one
run's measured sum. Runs whose methods train the same tensors (``compute_class``: the variant's
trained kinds; the rest of the config is shared by one comparison, or one sweep value) share one
compute measure: the median over those runs of each run's median per-round compute, times the
rounds. total = that shared compute + modeled communication. The measured sums are still
reported, in their own column.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import replace
from pathlib import Path

from ecolora.config import NetworkConfig
from ecolora.methods.variants import VARIANTS
from ecolora.report.results import atomic_write
from ecolora.runtime.batch import RunRecord
from ecolora.runtime.network import PRESETS, round_comm_s

BASELINE = "fedit"


def comm_under(rows: list[dict], net: NetworkConfig) -> float | None:
    """Modeled communication seconds of a run's rows on link ``net`` (None for old rows)."""
    if any("upload_bytes_max" not in r for r in rows):
        return None
    return sum(round_comm_s([r["upload_bytes_max"]], [r["download_bytes_max"]], net)
               for r in rows)


def compute_class(method: str) -> str:
    """Runs of one comparison whose local training costs the same: the tensor kinds trained."""
    return "+".join(VARIANTS[method].train)


def run_summary(rec: RunRecord) -> dict:
    """One run's headline numbers (a row of runs.csv); ``compute_s`` is its measured sum."""
    rows, cfg = rec.rows, rec.job.cfg
    evals = [r for r in rows if "eval_accuracy" in r]
    compute = sum(r["compute_s"] for r in rows)
    comm = sum(r["comm_s"] for r in rows)
    out = {
        "label": rec.job.label, "method": cfg.method, "seed": cfg.fed.seed,
        "value": rec.job.value, "rounds": len(rows),
        "final_accuracy": evals[-1]["eval_accuracy"] if evals else math.nan,
        "final_loss": evals[-1]["eval_loss"] if evals else math.nan,
        "best_accuracy": max((r["eval_accuracy"] for r in evals), default=math.nan),
        "initial_accuracy": rec.initial.get("eval_accuracy", math.nan),
        "upload_bytes": sum(r["upload_bytes"] for r in rows),
        "download_bytes": sum(r["download_bytes"] for r in rows),
        "upload_nonzeros": sum(r["upload_nonzeros"] for r in rows),
        "compute_s": compute, "compute_round_median_s": _median([r["compute_s"] for r in rows]),
        "compute_class": compute_class(cfg.method), "comm_s": comm, "wall_s": rec.wall_s,
    }
    out["total_bytes"] = out["upload_bytes"] + out["download_bytes"]
    for name, numbers in PRESETS.items():
        net = replace(cfg.network, **numbers)
        out[f"comm_s_{name}"] = comm_under(rows, net)
    return out


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else math.nan


def _median(xs: list[float]) -> float:
    xs = sorted(x for x in xs if x is not None and not math.isnan(x))
    if not xs:
        return math.nan
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def shared_compute(runs: list[dict]) -> dict[str, float]:
    """Per compute class, the median over its runs of their median per-round compute seconds."""
    by: dict[str, list[float]] = {}
    for r in runs:
        by.setdefault(r["compute_class"], []).append(r["compute_round_median_s"])
    return {cls: _median(xs) for cls, xs in by.items()}


def _std(xs: list[float]) -> float:
    """Sample standard deviation (ddof 1); 0 for a single seed."""
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


MEANED = ("upload_bytes", "download_bytes", "total_bytes", "comm_s", "final_loss",
          "best_accuracy", "rounds") + tuple(f"comm_s_{p}" for p in PRESETS)


def aggregate(runs: list[dict], key: str = "label") -> list[dict]:
    """Mean (and accuracy std) over seeds per ``key``, in first-seen order, with FedIT ratios.

    ``compute_measured_s`` is the mean of the runs' measured sums; ``compute_s`` is the shared
    measure of the row's compute class (``shared_compute`` times the rounds), and ``total_s``
    and the time cuts use it, so that two methods that train alike get the same compute.
    """
    groups: dict = {}
    for r in runs:
        groups.setdefault(r[key], []).append(r)
    per_round = shared_compute(runs)
    table = []
    for name, rs in groups.items():
        accs = [r["final_accuracy"] for r in rs]
        row = {key: name, "method": rs[0]["method"], "seeds": len(rs),
               "final_accuracy_mean": _mean(accs), "final_accuracy_std": _std(accs)}
        row.update({f: _mean([r[f] for r in rs]) for f in MEANED})
        row["compute_class"] = rs[0]["compute_class"]
        row["compute_measured_s"] = _mean([r["compute_s"] for r in rs])
        row["compute_round_s"] = per_round[row["compute_class"]]
        row["compute_s"] = row["compute_round_s"] * row["rounds"]
        row["total_s"] = row["compute_s"] + row["comm_s"]
        table.append(row)
    base = next((r for r in table if r[key] == BASELINE), None)
    for row in table:
        for f, out in (("upload_bytes", "upload_ratio"), ("total_bytes", "total_bytes_ratio")):
            row[out] = row[f] / base[f] if base and base[f] else math.nan
        for f, out in (("comm_s", "comm_reduction"), ("total_s", "total_time_reduction")):
            row[out] = 1 - row[f] / base[f] if base and base[f] else math.nan
        for p in PRESETS:
            b = base and base[f"comm_s_{p}"]
            row[f"comm_reduction_{p}"] = 1 - row[f"comm_s_{p}"] / b if b else math.nan
        row["accuracy_delta_vs_fedit"] = (row["final_accuracy_mean"]
                                          - base["final_accuracy_mean"]) if base else math.nan
    return table


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def _mb(x: float) -> str:
    return f"{x / 1e6:.3f}"


def _s(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.1f}"


def _s3(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


def markdown(table: list[dict], meta: dict) -> str:
    """compare.md: setup, headline table, bytes in both directions, time under each preset."""
    net = meta["network"]
    lines = [f"# {meta['title']}", "", f"Command: `{meta['command']}`", "",
             f"Model `{meta['model']}`, data `{meta['dataset']}`, {meta['clients']} clients, "
             f"{meta['rounds']} rounds, seeds {meta['seeds']}. Link: uplink "
             f"{net['uplink_mbps']:g} Mbit/s, downlink {net['downlink_mbps']:g} Mbit/s, "
             f"{net['latency_ms']:g} ms one way, transfer model `{net['transport']}` "
             f"({meta['network_name']}). Accuracy: final exact match, mean ± sample std over "
             "seeds; bytes: mean over seeds.", "",
             "| method | final accuracy | Δ vs FedIT | upload MB | upload / FedIT | download MB "
             "| up+down MB | up+down / FedIT |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['label']} | {100 * r['final_accuracy_mean']:.1f} ± "
            f"{100 * r['final_accuracy_std']:.1f}% | {_pp(r['accuracy_delta_vs_fedit'])} "
            f"| {_mb(r['upload_bytes'])} | {_pct(r['upload_ratio'])} "
            f"| {_mb(r['download_bytes'])} | {_mb(r['total_bytes'])} "
            f"| {_pct(r['total_bytes_ratio'])} |")
    lines += ["", "## Time: measured compute, modeled communication", "",
              "Communication is modeled from the exact bytes (docs/compare.md). Compute is "
              "measured on this machine (per round the slowest client), which other load "
              "distorts, so methods that train the same tensors share one compute measure: the "
              "median over their runs of each run's median per-round compute, times the rounds. "
              "Total time and its cut use that shared measure; the measured sums are shown "
              "apart.", "",
              "| method | trains | measured compute s | shared compute s/round | compute s "
              "(shared) | comm s (modeled) | total s | comm cut | total-time cut |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['label']} | {r['compute_class']} | {_s(r['compute_measured_s'])} "
            f"| {_s3(r['compute_round_s'])} | {_s(r['compute_s'])} | {_s(r['comm_s'])} "
            f"| {_s(r['total_s'])} | {_pct(r['comm_reduction'])} "
            f"| {_pct(r['total_time_reduction'])} |")
    lines += ["", "## Communication time under each preset (same bytes, modeled)", "",
              "| method | " + " | ".join(f"{p} comm s (cut vs FedIT)" for p in PRESETS) + " |",
              "|---|" + "---|" * len(PRESETS)]
    for r in table:
        cells = [f"{_s(r[f'comm_s_{p}'])} ({_pct(r[f'comm_reduction_{p}'])})" for p in PRESETS]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Presets: " + "; ".join(
        f"{p} {v['uplink_mbps']:g}/{v['downlink_mbps']:g} Mbit/s up/down, "
        f"{v['latency_ms']:g} ms" for p, v in PRESETS.items()) + "."]
    down = download_notes(table)
    if down:
        lines += ["", "## What sparse global deltas save (compress.compress_download)", ""]
        lines += down
    lines += ["", "Plots: `acc_vs_upload.png` (accuracy against cumulative upload and against "
              "upload + download), `loss_vs_round.png`, `time_breakdown.png`. Per-run numbers: "
              "`runs.csv`; per-round metrics: `runs/*/metrics.jsonl`.", ""]
    return "\n".join(lines)


def _pp(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.1f} pt"


def download_notes(table: list[dict]) -> list[str]:
    """One line per METHOD / METHOD+down pair: bytes saved in total and the accuracy change."""
    by = {r["label"]: r for r in table}
    out = []
    for r in table:
        if not r["label"].endswith("+down") or r["label"][:-5] not in by:
            continue
        a, b = by[r["label"][:-5]], r
        saved = a["download_bytes"] - b["download_bytes"]
        out.append(
            f"- `{b['label']}` vs `{a['label']}`: download {_mb(a['download_bytes'])} -> "
            f"{_mb(b['download_bytes'])} MB ({_pct(saved / a['download_bytes'])} less), "
            f"up+down {_mb(a['total_bytes'])} -> {_mb(b['total_bytes'])} MB "
            f"({_pct(1 - b['total_bytes'] / a['total_bytes'])} less), accuracy "
            f"{100 * a['final_accuracy_mean']:.1f}% -> {100 * b['final_accuracy_mean']:.1f}%.")
    return out


def write_compare(out: Path, records: list[RunRecord], meta: dict) -> list[Path]:
    """compare.md, compare.csv, runs.csv and the plots into ``out``; returns the paths."""
    from ecolora.report.compare_plots import plot_compare

    runs = [run_summary(r) for r in records]
    table = aggregate(runs)
    files = {"compare.md": markdown(table, meta), "compare.csv": csv_text(table),
             "runs.csv": csv_text(runs)}
    for name, text in files.items():
        atomic_write(out / name, lambda fh, t=text: fh.write(t))
    return [out / n for n in files] + plot_compare(records, table, out)
