"""PNG plots of a run: ROC curves, confusion matrix, few-shot metric vs shots, segmentation masks over images
(matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure  # object API: no pyplot state, no GUI backend
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from ..runtime.files import atomic_write


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, dpi=120, format="png")
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


# background transparent; then distinct colours (tab10) for the other classes
def _mask_palette(n: int) -> np.ndarray:
    from matplotlib import colormaps

    cols = colormaps["tab10"](np.arange(max(n, 1)) % 10)[:, :3]
    return np.vstack([[0.0, 0.0, 0.0], cols[: max(n - 1, 0)]])


def overlay_mask(image: np.ndarray, mask: np.ndarray, n_classes: int, alpha: float = 0.55) -> np.ndarray:
    """RGB float image (H, W, 3) with every non-background class (index > 0) tinted by its colour."""
    pal = _mask_palette(n_classes)
    out = image.astype(np.float32).copy()
    fg = mask > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * pal[mask[fg]]
    return out


def _lowest_label(bits: np.ndarray) -> np.ndarray:
    """Class-index map (0 = none, k + 1 = label k) of bit-encoded multi-label masks: where labels overlap,
    the first one is shown."""
    out = np.zeros(bits.shape, dtype=int)
    for k in range(7, -1, -1):
        out[(bits >> k) & 1 == 1] = k + 1
    return out


def plot_mask_grid(images, truth, pred, classes: Sequence[str], path: str | Path, title: str = "",
                   multilabel: bool = False) -> Path:
    """One row per image: the image, the ground truth over it, the prediction over it.

    ``images`` uint8 (N, 3, H, W); ``truth`` / ``pred`` class-index maps (N, H, W), or bit-encoded
    multi-label masks (bit k = class k) when ``multilabel``."""
    from matplotlib.patches import Patch

    imgs = np.asarray(images).transpose(0, 2, 3, 1) / 255.0
    truth, pred = np.asarray(truth).astype(int), np.asarray(pred).astype(int)
    if multilabel:
        truth, pred, classes = _lowest_label(truth), _lowest_label(pred), ["none", *classes]
    n = len(imgs)
    fig = Figure(figsize=(7.5, 2.5 * n + 0.8))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        for j, (pic, name) in enumerate(((imgs[i], "image"), (overlay_mask(imgs[i], truth[i], len(classes)), "truth"),
                                         (overlay_mask(imgs[i], pred[i], len(classes)), "prediction"))):
            axes[i, j].imshow(np.clip(pic, 0, 1))
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(name)
    pal = _mask_palette(len(classes))
    fig.legend(handles=[Patch(color=pal[k], label=c) for k, c in enumerate(classes) if k > 0],
               loc="lower center", ncol=min(len(classes), 5), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, dpi=100, format="png")
    return path


def plot_forest(entries: Sequence[Dict], path: str | Path, reference: str, metric: str) -> Optional[Path]:
    """Forest plot of model − reference differences: one panel per model, one line per setting, the point the
    difference and the bar its 95 % interval; filled markers are significant after the Holm adjustment."""
    if not entries:
        return None
    models = list(dict.fromkeys(e["model"] for e in entries))
    settings = list(dict.fromkeys(_forest_label(e) for e in entries))
    lo = min(e["diff_lo"] for e in entries if np.isfinite(e["diff_lo"]))
    hi = max(e["diff_hi"] for e in entries if np.isfinite(e["diff_hi"]))
    fig = Figure(figsize=(2.3 * len(models) + 2.6, 1.3 + 0.24 * len(settings)))
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for i, (ax, model) in enumerate(zip(axes, models)):
        for e in (e for e in entries if e["model"] == model):
            y = len(settings) - 1 - settings.index(_forest_label(e))
            c = "C3" if e.get("significant") else "C0"
            ax.plot([e["diff_lo"], e["diff_hi"]], [y, y], color=c, lw=1.4)
            ax.plot([e["diff"]], [y], "o", color=c, mfc=c if e.get("significant") else "white", ms=4.5)
        ax.axvline(0.0, color="k", lw=0.8, ls="--")
        ax.set_xlim(lo - 0.02, hi + 0.02)
        ax.set_title(model, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].set_yticks(range(len(settings)), settings[::-1], fontsize=7)
    axes[0].set_ylim(-0.7, len(settings) - 0.3)
    fig.supxlabel(f"{metric}: model − {reference} (95 % interval; filled red: significant after Holm)", fontsize=9)
    return _save(fig, path)


def _forest_label(e: Dict) -> str:
    what = f"{e['shots']}-shot {e['method']}" if e["mode"] == "few-shot" else e["mode"]
    return f"{e['experiment']} · {what}"


def plot_segmentation_history(histories: Sequence[Sequence[Dict]], hparams: Sequence[Dict], path: str | Path,
                              title: str = "") -> Path:
    """Per fold: training loss and validation mean Dice per epoch; trivial (constant-prediction) epochs
    are crosses, the selected epoch a star; each fold's legend entry says why it stopped."""
    fig = Figure(figsize=(9, 3.6))
    ax_loss, ax_dice = fig.subplots(1, 2)
    for f, (hist, hp) in enumerate(zip(histories, hparams)):
        ep = [h["epoch"] for h in hist]
        ax_loss.plot(ep, [h["train_loss"] for h in hist], label=f"fold {f}")
        dice = np.array([h["val_dice_mean"] for h in hist], dtype=float)
        line, = ax_dice.plot(ep, dice, label=f"fold {f}: best {hp['best_epoch']}; {hp['stopped']}")
        triv = [i for i, h in enumerate(hist) if h["trivial"]]
        ax_dice.plot([ep[i] for i in triv], dice[triv], "x", color=line.get_color(), ms=8)
        best = [i for i, h in enumerate(hist) if h["epoch"] == hp["best_epoch"]]
        ax_dice.plot([ep[i] for i in best], dice[best], "*", color=line.get_color(), ms=13)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_dice.set(xlabel="epoch", ylabel="validation mean Dice", title="validation (x: constant prediction)")
    ax_loss.legend(fontsize=7)
    ax_dice.legend(fontsize=6, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
