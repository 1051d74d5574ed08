"""Dice and IoU per class for label maps, per image, then averaged over images.

For one image and class ``k`` with ``tp, fp, fn`` pixel counts (prediction vs ground truth)::

    Dice = 2 tp / (2 tp + fp + fn)        IoU = tp / (tp + fp + fn)

Empty-mask convention: when class ``k`` is absent from both the ground truth and the prediction of an
image (``tp + fp + fn = 0``) both scores are undefined for that image (NaN) and the image is left out of
that class's mean; a class predicted where the ground truth has none, or missed where it has some, scores 0.
A class absent from every image and every prediction of a test set has a NaN mean (shown as "-").
``dice_mean`` / ``iou_mean`` average the per-class means over the foreground classes (every class but
index 0 when it is named ``background``; every class otherwise).
"""
from __future__ import annotations

import warnings
from typing import Dict, Sequence

import numpy as np
import torch


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(N, K, 3) int64 counts ``tp, fp, fn`` per image and class from label maps of shape (N, H, W)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    n = pred.shape[0]
    p = pred.reshape(n, -1).long()
    t = target.reshape(n, -1).long()
    k = torch.arange(n_classes, device=p.device).view(1, -1, 1)
    pk, tk = p.unsqueeze(1) == k, t.unsqueeze(1) == k  # (N, K, P)
    tp = (pk & tk).sum(-1)
    fp = (pk & ~tk).sum(-1)
    fn = (~pk & tk).sum(-1)
    return torch.stack([tp, fp, fn], dim=-1)


def dice_iou_per_image(counts: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) Dice and IoU from :func:`confusion_counts`; NaN where the class is in neither map."""
    c = counts.double().cpu().numpy()
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(union > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(union > 0, tp / union, np.nan)
    return dice, iou


def foreground_classes(classes: Sequence[str]) -> list[int]:
    return list(range(1, len(classes))) if len(classes) > 1 and classes[0].lower() == "background" \
        else list(range(len(classes)))


def _nanmean(x: np.ndarray, axis=None):
    with warnings.catch_warnings():  # an all-NaN column is a documented NaN result, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def segmentation_metrics(pred: torch.Tensor, target: torch.Tensor, classes: Sequence[str]) -> Dict[str, float]:
    """``dice_<class>``, ``iou_<class>`` (mean over images) and ``dice_mean``, ``iou_mean`` (foreground)."""
    return metrics_from_counts(confusion_counts(pred, target, len(classes)), classes)


def metrics_from_counts(counts: torch.Tensor, classes: Sequence[str]) -> Dict[str, float]:
    """:func:`segmentation_metrics` from per-image counts (lets callers count batch by batch)."""
    dice, iou = dice_iou_per_image(counts)
    d, j = _nanmean(dice, axis=0), _nanmean(iou, axis=0)
    out: Dict[str, float] = {}
    for k, name in enumerate(classes):
        out[f"dice_{name}"], out[f"iou_{name}"] = float(d[k]), float(j[k])
    fg = foreground_classes(classes)
    out["dice_mean"] = float(_nanmean(d[fg]))
    out["iou_mean"] = float(_nanmean(j[fg]))
    return out
