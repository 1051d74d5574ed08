"""Dice and IoU per class for label maps, per image, then averaged over images.

For one image and class ``k`` with ``tp, fp, fn`` pixel counts (prediction vs ground truth)::

    Dice = 2 tp / (2 tp + fp + fn)        IoU = tp / (tp + fp + fn)

Empty-mask convention: when class ``k`` is absent from both the ground truth and the prediction of an
image (``tp + fp + fn = 0``) both scores are undefined for that image (NaN) and the image is left out of
that class's mean; a class predicted where the ground truth has none, or missed where it has some, scores 0.
A class absent from every image and every prediction of a test set has a NaN mean (shown as "-").
``dice_mean`` / ``iou_mean`` average the per-class means over the foreground classes (every class but
index 0 when it is named ``background``; every class otherwise).

Multi-label masks (classes may overlap, e.g. lesion types) store bit ``k`` of each uint8 pixel for class
``k``; Dice and IoU are counted per class on those bits with the same conventions, and ``aupr_<class>`` is
the area under the precision-recall curve of the per-pixel probabilities pooled over every pixel of the
test images (average precision, the IDRiD lesion metric).
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


def unpack_labels(masks: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(N, K, H, W) bool of multi-label masks (N, H, W) whose bit ``k`` is class ``k``."""
    bits = (1 << torch.arange(n_classes, device=masks.device)).view(1, -1, 1, 1)
    return (masks.long().unsqueeze(1) & bits) > 0


def multilabel_counts(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """:func:`confusion_counts` for bit-encoded multi-label masks (N, H, W)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    n = pred.shape[0]
    p = unpack_labels(pred, n_classes).reshape(n, n_classes, -1)
    t = unpack_labels(target, n_classes).reshape(n, n_classes, -1)
    return torch.stack([(p & t).sum(-1), (p & ~t).sum(-1), (~p & t).sum(-1)], dim=-1)


def label_counts(pred: torch.Tensor, target: torch.Tensor, n_classes: int, multilabel: bool) -> torch.Tensor:
    return multilabel_counts(pred, target, n_classes) if multilabel else confusion_counts(pred, target, n_classes)


def class_fractions(masks: torch.Tensor, n_classes: int, multilabel: bool) -> list[float]:
    """Share of pixels labelled with each class (multi-label: each label's share; they need not sum to 1)."""
    total = max(masks.numel(), 1)
    if multilabel:
        return [float(v) / total for v in unpack_labels(masks, n_classes).sum((0, 2, 3)).tolist()]
    return [float(v) / total for v in torch.bincount(masks.reshape(-1).long(), minlength=n_classes)[:n_classes]]


def pixel_aupr(probs: torch.Tensor, target: torch.Tensor, classes: Sequence[str]) -> Dict[str, float]:
    """``aupr_<class>`` (average precision over all pixels pooled; NaN for a class with no positive pixel)
    and ``aupr_mean`` from probabilities (N, K, H, W) and bit-encoded multi-label targets (N, H, W)."""
    from sklearn.metrics import average_precision_score

    truth = unpack_labels(target, len(classes))
    out: Dict[str, float] = {}
    for k, name in enumerate(classes):
        y = truth[:, k].reshape(-1).numpy()
        out[f"aupr_{name}"] = float(average_precision_score(y, probs[:, k].reshape(-1).float().numpy())) \
            if y.any() else float("nan")
    out["aupr_mean"] = float(_nanmean(np.array([out[f"aupr_{c}"] for c in classes])))
    return out


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
