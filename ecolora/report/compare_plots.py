"""Plots of a comparison: accuracy against bytes sent (the key one), loss, and time breakdown.

Curves are means over seeds at each evaluated round (every seed evaluates the same rounds), so
a point's x is the mean cumulative megabytes sent by then and its y the mean accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecolora.report.results import atomic_write
from ecolora.runtime.batch import RunRecord
from ecolora.runtime.network import PRESETS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110), mode="wb")
    _plt().close(fig)
    return path


def mean_curves(records: list[RunRecord]) -> dict[str, dict[str, np.ndarray]]:
    """Per label: rounds, cumulative upload / total MB, train loss; eval points (mean of seeds)."""
    by: dict[str, list[RunRecord]] = {}
    for rec in records:
        by.setdefault(rec.job.label, []).append(rec)
    out = {}
    for label, recs in by.items():
        n = min(len(r.rows) for r in recs)
        up = np.mean([np.cumsum([row["upload_bytes"] for row in r.rows[:n]]) for r in recs], 0)
        both = np.mean([np.cumsum([row["upload_bytes"] + row["download_bytes"]
                                   for row in r.rows[:n]]) for r in recs], 0)
        loss = np.mean([[row["train_loss"] for row in r.rows[:n]] for r in recs], 0)
        ev = [i for i in range(n) if all("eval_accuracy" in r.rows[i] for r in recs)]
        acc = np.mean([[r.rows[i]["eval_accuracy"] for i in ev] for r in recs], 0)
        eloss = np.mean([[r.rows[i]["eval_loss"] for i in ev] for r in recs], 0)
        out[label] = {"round": np.arange(1, n + 1), "up_mb": up / 1e6, "both_mb": both / 1e6,
                      "train_loss": loss, "eval_idx": np.array(ev, dtype=int),
                      "acc": 100 * np.asarray(acc), "eval_loss": np.asarray(eloss)}
    return out


def plot_compare(records: list[RunRecord], table: list[dict], out: Path) -> list[Path]:
    plt = _plt()
    curves = mean_curves(records)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for label, c in curves.items():
        ev = c["eval_idx"]
        for ax, x in ((axes[0], c["up_mb"]), (axes[1], c["both_mb"])):
            ax.plot(x[ev], c["acc"], marker="o", markersize=3, label=label)
    for ax, what, key in ((axes[0], "cumulative upload (MB)", "up_mb"),
                          (axes[1], "cumulative upload + download (MB)", "both_mb")):
        xs = np.concatenate([c[key][c["eval_idx"]] for c in curves.values()])
        if xs.size and xs.min() > 0 and xs.max() / xs.min() >= 10:  # bytes differ 10x+: log
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            what += ", log scale"
        ax.set_xlabel(what)
        ax.set_ylabel("exact match (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Accuracy against bytes sent (mean over seeds)")
    fig.tight_layout()
    paths.append(_save(fig, out / "acc_vs_upload.png"))

    fig, ax = plt.subplots(figsize=(7, 4.8))
    for i, (label, c) in enumerate(curves.items()):
        color = f"C{i % 10}"
        ax.plot(c["round"], c["train_loss"], color=color, label=f"{label} train")
        ax.plot(c["round"][c["eval_idx"]], c["eval_loss"], color=color, linestyle="--",
                marker="o", markersize=3, label=f"{label} eval")
    ax.set_xlabel("round")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Loss against round (mean over seeds)")
    fig.tight_layout()
    paths.append(_save(fig, out / "loss_vs_round.png"))
    paths.append(plot_time_breakdown(table, out))
    return paths


def plot_time_breakdown(table: list[dict], out: Path) -> Path:
    """Stacked compute + modeled communication seconds per method, for the run's link and
    each preset (compute is the same in every panel: it does not depend on the link). The bar's
    compute is the shared measure of its compute class (``report.compare.aggregate``); a black
    tick marks the run's own measured sum, so machine noise stays visible but apart."""
    plt = _plt()
    panels = [("this run's link", "comm_s")] + [(p, f"comm_s_{p}") for p in PRESETS]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 0.5 * len(table) + 2.5),
                             sharey=True)
    labels = [r["label"] for r in table]
    y = np.arange(len(labels))
    for ax, (title, key) in zip(axes, panels, strict=True):
        comp = np.array([r["compute_s"] for r in table], dtype=float)
        comm = np.array([np.nan_to_num(r[key]) if r[key] is not None else 0.0 for r in table])
        measured = np.array([r["compute_measured_s"] for r in table], dtype=float)
        ax.barh(y, comp, color="C0", label="compute (shared median)")
        ax.barh(y, comm, left=comp, color="C1", label="communication (modeled)")
        ax.plot(measured, y, "k|", markersize=14, label="compute measured (sum)")
        ax.set_title(title)
        ax.set_xlabel("seconds")
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Time per run: compute + communication (mean over seeds)")
    fig.tight_layout()
    return _save(fig, out / "time_breakdown.png")
