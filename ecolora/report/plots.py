"""PNG plots of a run: accuracy and loss against round and against cumulative upload MB."""

from __future__ import annotations

from pathlib import Path

from ecolora.report.results import atomic_write


def plot_run(rows: list[dict], out: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cum, total = [], 0
    for r in rows:
        total += r["upload_bytes"]
        cum.append(total / 1e6)
    ev = [(r["round"], c, r) for r, c in zip(rows, cum, strict=True) if "eval_accuracy" in r]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    series = [
        (axes[0, 0], [r["round"] for r in rows], [r["train_loss"] for r in rows], "train loss"),
        (axes[0, 0], [e[0] for e in ev], [e[2]["eval_loss"] for e in ev], "eval loss"),
        (axes[0, 1], [e[0] for e in ev], [100 * e[2]["eval_accuracy"] for e in ev], "accuracy"),
        (axes[1, 0], cum, [r["train_loss"] for r in rows], "train loss"),
        (axes[1, 0], [e[1] for e in ev], [e[2]["eval_loss"] for e in ev], "eval loss"),
        (axes[1, 1], [e[1] for e in ev], [100 * e[2]["eval_accuracy"] for e in ev], "accuracy"),
    ]
    for ax, x, y, label in series:
        ax.plot(x, y, marker="o" if len(x) < 40 else None, markersize=3, label=label)
    for ax, xl, yl in [(axes[0, 0], "round", "loss"), (axes[0, 1], "round", "exact match (%)"),
                       (axes[1, 0], "cumulative upload (MB)", "loss"),
                       (axes[1, 1], "cumulative upload (MB)", "exact match (%)")]:
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = out / "curves.png"
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110), mode="wb")
    plt.close(fig)
    return [path]
