"""Loss-curve figures of pretraining runs (every run folder gets ``loss_curves.png``; the demo compares methods)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from .logger import read_metrics

LOSS_KEYS = ("loss", "public", "elite", "caption", "revision", "contrastive", "wsc")
LOSS_CURVES = "loss_curves.png"


def plot_loss_curves(panels: Mapping[str, str | Path], out: str | Path) -> Path:
    """One panel per ``title -> metrics.jsonl``: the total loss and each loss term over optimiser steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, (title, metrics) in zip(axes[0], panels.items()):
        recs = read_metrics(Path(metrics)) if Path(metrics).is_file() else []
        steps = [r["step"] for r in recs]
        for key in (k for k in LOSS_KEYS if recs and k in recs[0]):
            ax.plot(steps, [r[key] for r in recs], label=key)
        ax.set_title(title)
        ax.set_xlabel("optimiser step")
        if recs:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no steps logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
