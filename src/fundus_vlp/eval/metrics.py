"""Classification metrics from scikit-learn, fold aggregation and bootstrap intervals.

Definitions follow the official ones with their bugs fixed (docs/reference.md#evaluation-metrics): only the metrics
that fit the task are computed, binary decision thresholds come from validation data (never from the test set),
the positive class of a binary task is named by the experiment, and classes absent from the test labels are reported,
not silently averaged away.
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, cohen_kappa_score,
                             f1_score, recall_score, roc_auc_score, roc_curve)
from sklearn.preprocessing import label_binarize

TASKS = ("multiclass", "binary", "graded", "multilabel")

MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int], float]


def _present(y_true: np.ndarray, n_classes: int) -> np.ndarray:
    return np.array([c for c in range(n_classes) if np.any(y_true == c)], dtype=int)


def _auc(y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray, positive: int) -> float:
    """Binary: AUC of the positive class. Multi-class: mean one-vs-rest AUC over the classes present."""
    if probs.shape[1] == 2:
        y = y_true == positive
        return float(roc_auc_score(y, probs[:, positive])) if 0 < y.sum() < len(y) else float("nan")
    present = _present(y_true, probs.shape[1])
    if len(present) < 2:
        return float("nan")
    onehot = label_binarize(y_true, classes=np.arange(probs.shape[1]))[:, present]
    return float(roc_auc_score(onehot, probs[:, present], average="macro"))


def _aupr(y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray, positive: int) -> float:
    """Binary: average precision of the positive class. Multi-class: macro AP over the classes present."""
    if probs.shape[1] == 2:
        y = y_true == positive
        return float(average_precision_score(y, probs[:, positive])) if y.any() else float("nan")
    present = _present(y_true, probs.shape[1])
    if len(present) == 0:
        return float("nan")
    onehot = label_binarize(y_true, classes=np.arange(probs.shape[1]))[:, present]
    return float(average_precision_score(onehot, probs[:, present], average="macro"))


def _f1_macro(y_true, probs, y_pred, positive) -> float:
    return float(f1_score(y_true, y_pred, labels=np.arange(probs.shape[1]), average="macro", zero_division=0))


def _kappa(y_true, probs, y_pred, positive) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one class only: kappa undefined -> nan
        return float(cohen_kappa_score(y_true, y_pred, labels=np.arange(probs.shape[1]), weights="quadratic"))


def _f1_pos(y_true, probs, y_pred, positive) -> float:
    return float(f1_score(y_true == positive, y_pred == positive, zero_division=0))


def _sensitivity(y_true, probs, y_pred, positive) -> float:
    y = y_true == positive
    return float(recall_score(y, y_pred == positive, zero_division=0)) if y.any() else float("nan")


def _specificity(y_true, probs, y_pred, positive) -> float:
    y = y_true != positive
    return float(recall_score(y, y_pred != positive, zero_division=0)) if y.any() else float("nan")


METRICS: Dict[str, MetricFn] = {
    "acc": lambda y, p, yp, pos: float(accuracy_score(y, yp)),
    "aca": lambda y, p, yp, pos: float(balanced_accuracy_score(y, yp)),  # mean per-class recall
    "f1_macro": _f1_macro,
    "auc": _auc,
    "aupr": _aupr,
    "kappa": _kappa,  # quadratic weights, graded tasks only
    "f1_pos": _f1_pos,  # F1 of the disease (positive) class, binary tasks only
    "sensitivity": _sensitivity,
    "specificity": _specificity,
}


def task_metrics(task: str) -> List[str]:
    """The metrics that make sense for a task (never binary metrics on 5 classes, unlike KeepFIT)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "multilabel":
        return ["acc", "f1_macro", "auc", "aupr"]
    names = ["acc", "aca", "f1_macro", "auc", "aupr"]
    if task == "graded":
        names.append("kappa")
    if task == "binary":
        names += ["f1_pos", "sensitivity", "specificity"]
    return names


def predict_labels(probs: np.ndarray, threshold: Optional[float] = None, positive: int = 1) -> np.ndarray:
    """Argmax, or for a binary task ``positive if p[positive] >= threshold`` with a validation-chosen threshold."""
    probs = np.asarray(probs)
    if threshold is None:
        return probs.argmax(axis=1)
    if probs.shape[1] != 2:
        raise ValueError("a decision threshold only applies to binary tasks")
    return np.where(probs[:, positive] >= threshold, positive, 1 - positive)


def choose_threshold(y_val: np.ndarray, probs_val: np.ndarray, positive: int = 1) -> Optional[float]:
    """Threshold maximising Youden's J (= balanced accuracy) on **validation** data; None if val has one class."""
    y = np.asarray(y_val) == positive
    if y.all() or not y.any():
        return None
    fpr, tpr, thresholds = roc_curve(y, np.asarray(probs_val)[:, positive])
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])


def compute_metrics(y_true: Sequence[int], probs: np.ndarray, task: str = "multiclass",
                    threshold: Optional[float] = None, positive: int = 1,
                    names: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Metrics of one test set. ``probs`` is N×K (rows sum to 1; per-class sigmoid scores for multilabel).

    For ``task="binary"``, ``positive`` is the index of the disease class and ``threshold`` (chosen on
    validation with :func:`choose_threshold`) replaces the argmax decision when given.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if task == "multilabel":
        return multilabel_metrics(np.asarray(y_true), probs, threshold if threshold is not None else 0.5)
    y_true = np.asarray(y_true, dtype=int)
    if probs.ndim != 2 or len(probs) != len(y_true):
        raise ValueError(f"probs must be N×K with N={len(y_true)}, got shape {probs.shape}")
    y_pred = predict_labels(probs, threshold if task == "binary" else None, positive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return {n: METRICS[n](y_true, probs, y_pred, positive) for n in (names or task_metrics(task))}


def multilabel_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> Dict[str, float]:
    """Multi-hot targets vs per-class sigmoid scores: element accuracy, macro F1, macro AUC and AP over
    the classes that have both positives and negatives."""
    y_true = np.asarray(y_true, dtype=int)
    pred = (scores >= threshold).astype(int)
    valid = [k for k in range(y_true.shape[1]) if 0 < y_true[:, k].sum() < len(y_true)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        out = {
            "acc": float(accuracy_score(y_true.ravel(), pred.ravel())),
            "f1_macro": float(f1_score(y_true, pred, average="macro", zero_division=0)),
        }
        out["auc"] = (float(roc_auc_score(y_true[:, valid], scores[:, valid], average="macro"))
                      if valid else float("nan"))
        out["aupr"] = (float(average_precision_score(y_true[:, valid], scores[:, valid], average="macro"))
                       if valid else float("nan"))
    return out


def aggregate_folds(per_fold: Sequence[Mapping[str, float]]) -> Dict[str, Dict[str, float]]:
    """Mean and **population** std (ddof=0, as FLAIR reports) of each metric over folds."""
    names = list(per_fold[0]) if per_fold else []
    mean, std = {}, {}
    for n in names:
        vals = np.array([f[n] for f in per_fold], dtype=float)
        ok = vals[~np.isnan(vals)]
        mean[n] = float(ok.mean()) if len(ok) else float("nan")
        std[n] = float(ok.std(ddof=0)) if len(ok) else float("nan")
    return {"mean": mean, "std": std}


def _counting_replicates(y: np.ndarray, y_pred: np.ndarray, idx: np.ndarray, n_classes: int) -> Dict[str, np.ndarray]:
    """acc and aca of every bootstrap replicate at once (B×N index matrix). Plain counting, checked against
    ``accuracy_score`` / ``balanced_accuracy_score`` in the tests; used because calling sklearn B×folds
    times costs seconds per row."""
    correct = (y_pred == y)[idx].astype(float)
    yy = y[idx]
    b = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
    flat = b * n_classes + yy.ravel()
    size = idx.shape[0] * n_classes
    hits = np.bincount(flat, weights=correct.ravel(), minlength=size).reshape(-1, n_classes)
    total = np.bincount(flat, minlength=size).reshape(-1, n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(total > 0, hits / np.maximum(total, 1), np.nan)
    return {"acc": correct.mean(axis=1), "aca": np.nanmean(recall, axis=1)}


FAST_BOOTSTRAP = ("acc", "aca")


def bootstrap_ci(folds: Sequence[Dict], names: Sequence[str], n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> Dict[str, List[float]]:
    """Percentile bootstrap interval of the fold-mean of each metric, resampling test samples.

    ``folds`` holds dicts with ``y_true``, ``probs`` and optionally ``threshold``/``positive``/``task``.
    Each replicate resamples every fold's test set with replacement (seeded), recomputes the metric and
    averages over folds, so the interval reflects the test-sample uncertainty of the reported mean.
    acc/aca use a vectorised count; other metrics call scikit-learn once per replicate and fold (slower).
    """
    if n_boot <= 0 or not folds or not names:
        return {}
    rng = np.random.default_rng(seed)
    per_fold = {n: np.full((len(folds), n_boot), np.nan) for n in names}
    for f, fold in enumerate(folds):
        y, p = np.asarray(fold["y_true"]), np.asarray(fold["probs"], dtype=np.float64)
        task, thr, pos = fold.get("task", "multiclass"), fold.get("threshold"), fold.get("positive", 1)
        idx = rng.integers(0, len(y), (n_boot, len(y)))
        fast = [n for n in names if n in FAST_BOOTSTRAP and task != "multilabel"]
        if fast:
            y_pred = predict_labels(p, thr if task == "binary" else None, pos)
            reps = _counting_replicates(y.astype(int), y_pred, idx, p.shape[1])
            for n in fast:
                per_fold[n][f] = reps[n]
        slow = [n for n in names if n not in fast]
        for b in range(n_boot if slow else 0):
            m = compute_metrics(y[idx[b]], p[idx[b]], task, thr, pos, names=slow if task != "multilabel" else None)
            for n in slow:
                per_fold[n][f, b] = m[n]
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for n in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            reps = np.nanmean(per_fold[n], axis=0)
        reps = reps[~np.isnan(reps)]
        out[n] = [float(np.percentile(reps, lo)), float(np.percentile(reps, hi))] if len(reps) else [float("nan")] * 2
    return out
