"""One table and one plot per ablation axis: sweep_AXIS.md, sweep_AXIS.csv, sweep_AXIS.png.

The paper ablates sparsity, number of segments, client count, local updates and rank, and
studies participation and non-IID data (spec §2, §9 [3P-SRC]); ``ecolora sweep`` runs one axis
per call and this module reports it: per value and method, accuracy (mean ± std over seeds),
bytes, the ratio to FedIT at the same value, and modeled communication and total time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecolora.report.compare import _mb, _pct, _s, aggregate, csv_text, run_summary
from ecolora.report.results import atomic_write
from ecolora.runtime.batch import RunRecord


def sweep_table(records: list[RunRecord]) -> list[dict]:
    """Rows per (value, method) in run order, each aggregated over seeds."""
    runs = [run_summary(r) for r in records]
    values: list = []
    for r in runs:
        if r["value"] not in values:
            values.append(r["value"])
    table = []
    for v in values:
        for row in aggregate([r for r in runs if r["value"] == v]):
            table.append({"value": v, **row})
    return table


def markdown(axis: str, table: list[dict], meta: dict) -> str:
    lines = [f"# Sweep over `{axis}`", "", f"Command: `{meta['command']}`", "",
             meta["axis_help"], "",
             f"Seeds {meta['seeds']}; accuracy is the final exact match, mean ± sample std; "
             "bytes and times are means over seeds; ratios compare with FedIT at the same value.",
             "", f"| {axis} | method | final accuracy | upload MB | upload / FedIT | up+down MB "
             "| comm s | total s | comm cut vs FedIT |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['value']} | {r['label']} | {100 * r['final_accuracy_mean']:.1f} ± "
            f"{100 * r['final_accuracy_std']:.1f}% | {_mb(r['upload_bytes'])} "
            f"| {_pct(r['upload_ratio'])} | {_mb(r['total_bytes'])} | {_s(r['comm_s'])} "
            f"| {_s(r['total_s'])} | {_pct(r['comm_reduction'])} |")
    slug = axis.replace(".", "_")
    lines += ["", f"Plot: `sweep_{slug}.png`. Per-run numbers: `sweep_{slug}_runs.csv`.", ""]
    return "\n".join(lines)


def _positions(values: list) -> tuple[list[float], bool]:
    try:
        xs = [float(v) for v in values]
        return xs, True
    except (TypeError, ValueError):
        return list(range(len(values))), False


def plot_sweep(axis: str, table: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = list(dict.fromkeys(r["value"] for r in table))
    xs, numeric = _positions(values)
    x_of = dict(zip(values, xs, strict=True))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    panels = [("final_accuracy_mean", 100, "final exact match (%)", False),
              ("upload_bytes", 1e-6, "upload MB (whole run)", True),
              ("comm_s", 1, "modeled communication s", False)]
    for label in dict.fromkeys(r["label"] for r in table):
        rows = [r for r in table if r["label"] == label]
        x = [x_of[r["value"]] for r in rows]
        for ax, (key, scale, ylabel, logy) in zip(axes, panels, strict=True):
            y = np.array([r[key] for r in rows], dtype=float) * scale
            if key == "final_accuracy_mean":
                err = np.array([r["final_accuracy_std"] for r in rows]) * 100
                ax.errorbar(x, y, yerr=err, marker="o", markersize=4, capsize=3, label=label)
            else:
                ax.plot(x, y, marker="o", markersize=4, label=label)
            ax.set_ylabel(ylabel)
            if logy and np.all(y > 0):
                ax.set_yscale("log")
    for ax in axes:
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3, which="both")
        if not numeric:
            ax.set_xticks(xs, [str(v) for v in values])
        elif len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Sweep over {axis} (mean over seeds)")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110), mode="wb")
    plt.close(fig)
    return path


def write_sweep(out: Path, axis: str, records: list[RunRecord], meta: dict) -> list[Path]:
    table = sweep_table(records)
    runs = [run_summary(r) for r in records]
    slug = axis.replace(".", "_")
    files = {f"sweep_{slug}.md": markdown(axis, table, meta),
             f"sweep_{slug}.csv": csv_text(table), f"sweep_{slug}_runs.csv": csv_text(runs)}
    for name, text in files.items():
        atomic_write(out / name, lambda fh, t=text: fh.write(t))
    return [out / n for n in files] + [plot_sweep(axis, table, out / f"sweep_{slug}.png")]

