"""The clients x categories heatmap of a partition, so a run folder shows how non-IID it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecolora.report.results import atomic_write


def plot_partition(summary: dict[str, Any], out: Path, title: str = "") -> Path:
    """``partition.png``: one row per client, one column per category, cells = example counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.array(summary["counts"], dtype=float).reshape(len(summary["counts"]), -1)
    names = [n or "(none)" for n in summary["categories"]]
    k, c = counts.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.7 * c), max(3.0, 1.2 + 0.35 * k)))
    image = ax.imshow(counts, aspect="auto", cmap="viridis")
    ax.set_xticks(range(c), names, rotation=45, ha="right")
    ax.set_yticks(range(k), [str(i) for i in range(k)])
    ax.set_xlabel("category")
    ax.set_ylabel("client")
    if k * c <= 400:  # numbers stay legible up to about 20 x 20 cells
        top = counts.max() or 1.0
        for i in range(k):
            for j in range(c):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if counts[i, j] < 0.6 * top else "black")
    fig.colorbar(image, ax=ax, label="examples")
    ax.set_title(title or "examples per client and category", fontsize=9)
    fig.tight_layout()
    path = out / "partition.png"
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100), mode="wb")
    plt.close(fig)
    return path
