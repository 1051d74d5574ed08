"""PNG plots of a run: ROC curves, confusion matrix, few-shot metric vs shots (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure  # object API: no pyplot state, no GUI backend
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_roc(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: str | Path,
             title: str = "ROC", positive: Optional[int] = None) -> Optional[Path]:
    """One-vs-rest ROC per class present (binary: the positive class only)."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    targets = [positive if positive is not None else 1] if probs.shape[1] == 2 else range(probs.shape[1])
    drawn = 0
    for k in targets:
        y = np.asarray(y_true) == k
        if 0 < y.sum() < len(y):
            RocCurveDisplay.from_predictions(y, probs[:, k], name=classes[k], ax=ax)
            drawn += 1
    if not drawn:
        return None
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    return _save(fig, path)


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], path: str | Path,
                   title: str = "Confusion matrix (row-normalised)") -> Path:
    size = max(4.5, 0.9 * len(classes) + 2.5)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    labels = [c if len(c) <= 18 else c[:16] + "…" for c in classes]
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=np.arange(len(classes)), display_labels=labels,
                                            normalize="true", values_format=".2f", ax=ax, colorbar=False)
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_title(title)
    return _save(fig, path)


def plot_shots(rows: List[Dict], path: str | Path, metric: str = "aca", title: str = "") -> Optional[Path]:
    """Mean ± std of ``metric`` against shots, one line per few-shot method; zero-shot as a dashed line."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    methods = sorted({r["method"] for r in rows if r["mode"] == "few-shot"})
    for m in methods:
        pts = sorted((r["shots"], r["metrics"].get(metric, np.nan), r["std"].get(metric, 0.0))
                     for r in rows if r["mode"] == "few-shot" and r["method"] == m)
        if pts:
            x, y, s = map(np.array, zip(*pts))
            ax.errorbar(x, y, yerr=s, marker="o", capsize=3, label=m)
    for r in rows:
        if r["mode"] == "zero-shot" and r.get("split") == "fold-test":
            ax.axhline(r["metrics"].get(metric, np.nan), ls="--", c="k", lw=1, label="zero-shot")
    if not methods:
        return None
    ax.set_xlabel("shots per class")
    ax.set_ylabel(metric)
    ax.set_xscale("log")
    shots = sorted({r["shots"] for r in rows if r["mode"] == "few-shot"})
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.set_title(title or f"few-shot {metric}")
    ax.legend(fontsize=8)
    return _save(fig, path)
