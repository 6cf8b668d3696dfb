"""One PNG per family of the robustness matrix: metric against cumulative upload, per row.

Plotting the metric against bytes (not rounds) shows in one picture both criteria a row is
judged on: how close the methods end, and how much upload each spent to get there. Curves are
means over seeds at each evaluated round (every seed of a run evaluates the same rounds).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ecolora.report.compare_plots import _plt, _save
from ecolora.report.matrix import slug


def mean_curve(runs: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean cumulative upload MB, mean metric) over ``runs`` at their common eval points;
    accuracy in %."""
    n = min(len(r["curve"]) for r in runs)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    col = 2 if metric == "accuracy" else 3
    x = np.mean([[p[1] for p in r["curve"][:n]] for r in runs], 0) / 1e6
    y = np.mean([[p[col] for p in r["curve"][:n]] for r in runs], 0)
    return x, 100 * y if metric == "accuracy" else y


def plot_family(family: str, rows: list[tuple[str, str, list[dict]]], out: Path) -> Path:
    """``rows``: (row name, metric, its runs incl. borrowed FedIT) -> OUT/matrix_FAMILY.png."""
    plt = _plt()
    cols = min(3, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    for ax, (name, metric, runs) in zip(axes.flat, rows, strict=False):
        xs = []
        for label in dict.fromkeys(r["label"] for r in runs):
            x, y = mean_curve([r for r in runs if r["label"] == label], metric)
            if x.size:
                ax.plot(x, y, marker="o", markersize=3, label=label)
                xs.append(x)
            if label == "fedit" and y.size:  # the level the criteria are judged against
                ax.axhline(y[-1], color="gray", linestyle=":", linewidth=1)
        allx = np.concatenate(xs) if xs else np.zeros(0)
        if allx.size and allx.min() > 0 and allx.max() / allx.min() >= 10:
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("cumulative upload (MB)")
        ax.set_ylabel("eval accuracy (%)" if metric == "accuracy" else "eval loss")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.set_visible(False)
    fig.suptitle(f"{family}: metric against upload (mean over seeds)")
    fig.tight_layout()
    return _save(fig, out / f"matrix_{slug(family)}.png")
