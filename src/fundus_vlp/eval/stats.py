"""Statistics for comparing models on shared test sets: intervals over folds, paired tests, multiplicity.

Pure functions of numpy arrays (no models, no files):

* :func:`t_interval` — mean ± Student-t 95 % interval over folds (``s/√F`` with the sample std, ddof=1);
* :func:`paired_bootstrap` — the difference of a metric between two models scored on the *same* test images,
  resampling the images of each fold (the same resample for both models), averaged over folds; percentile
  interval and a two-sided p-value from the bootstrap distribution shifted to the null
  (:func:`bootstrap_comparison`, also used for caption metrics by ``eval.captioning``);
* :func:`delong` / :func:`paired_delong` — DeLong's test of two correlated AUCs with the O(n log n) midrank
  computation (Sun & Xu, 2014); the one-vs-rest macro AUC of a multi-class task is handled through the
  per-image structural components, so that a binary task gives exactly DeLong's variance;
* :func:`holm` — Holm's step-down adjustment of a family of p-values.

Folds are the evaluation's repeated seeded splits: their test sets overlap, so fold results are not
independent. The t-interval treats them as if they were (it is the spread of the protocol, not a sampling
interval of the population) and :func:`paired_delong` combines the folds' standard errors by their mean, the
bound that holds whatever the correlation between folds.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import stats as sps

from .metrics import FAST_BOOTSTRAP, _counting_replicates, compute_metrics, predict_labels


@dataclass(frozen=True)
class Comparison:
    """Model minus reference: the difference, its interval, the test's p-value and the test's name."""

    diff: float
    lo: float
    hi: float
    p: float
    test: str

    def to_dict(self) -> Dict:
        return asdict(self)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t interval over folds; NaN bounds with fewer than two finite values."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(sps.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


# -- paired bootstrap ----------------------------------------------------------------------------------

def check_paired(folds_a: Sequence[Dict], folds_b: Sequence[Dict]) -> None:
    """Both models must have been scored on the same test images (same labels, fold by fold)."""
    if len(folds_a) != len(folds_b):
        raise ValueError(f"paired comparison needs the same folds: {len(folds_a)} vs {len(folds_b)}")
    for f, (a, b) in enumerate(zip(folds_a, folds_b)):
        if not np.array_equal(np.asarray(a["y_true"]), np.asarray(b["y_true"])):
            raise ValueError(f"fold {f}: the two models were not scored on the same test images")


def _replicates(fold: Dict, metric: str, idx: np.ndarray) -> np.ndarray:
    """The metric on each bootstrap resample (rows of ``idx``) of one fold."""
    y, p = np.asarray(fold["y_true"]), np.asarray(fold["probs"], dtype=np.float64)
    task, thr, pos = fold.get("task", "multiclass"), fold.get("threshold"), fold.get("positive", 1)
    if metric in FAST_BOOTSTRAP and task != "multilabel":
        y_pred = predict_labels(p, thr if task == "binary" else None, pos)
        return _counting_replicates(y.astype(int), y_pred, idx, p.shape[1])[metric]
    return np.array([compute_metrics(y[i], p[i], task, thr, pos, names=None if task == "multilabel" else [metric])
                     [metric] for i in idx])


def _observed(fold: Dict, metric: str) -> float:
    return compute_metrics(fold["y_true"], fold["probs"], fold.get("task", "multiclass"), fold.get("threshold"),
                           fold.get("positive", 1), names=None if fold.get("task") == "multilabel" else [metric])[metric]


def paired_bootstrap(folds_a: Sequence[Dict], folds_b: Sequence[Dict], metric: str, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> Comparison:
    """Metric of model A minus model B, averaged over folds, with a paired bootstrap over test images.

    Each replicate draws, for every fold, one resample of its test images and scores both models on it, so the
    correlation between the models (same images, same hard cases) is kept. Interval: percentile. p-value:
    two-sided, from the replicates centred on the observed difference (the null distribution):
    ``(1 + #{|d* − d| ≥ |d|}) / (B + 1)``; two identical models give d = 0 and p = 1.
    """
    check_paired(folds_a, folds_b)
    rng = np.random.default_rng(seed)
    diffs = np.zeros((len(folds_a), n_boot))
    observed = []
    for f, (a, b) in enumerate(zip(folds_a, folds_b)):
        idx = rng.integers(0, len(a["y_true"]), (n_boot, len(a["y_true"])))
        diffs[f] = _replicates(a, metric, idx) - _replicates(b, metric, idx)
        observed.append(_observed(a, metric) - _observed(b, metric))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without some class: NaN, dropped
        reps = np.nanmean(diffs, axis=0)
    return bootstrap_comparison(float(np.nanmean(observed)), reps, level)


def bootstrap_comparison(observed: float, replicates: np.ndarray, level: float = 0.95) -> Comparison:
    """The observed difference with the percentile interval of its bootstrap replicates (NaN ones dropped) and
    the two-sided p-value from the replicates centred on the observed difference (the null distribution):
    ``(1 + #{|d* − d| ≥ |d|}) / (B + 1)``."""
    reps = np.asarray(replicates, dtype=float)
    reps = reps[~np.isnan(reps)]
    d = float(observed)
    if len(reps) == 0 or math.isnan(d):
        return Comparison(d, float("nan"), float("nan"), float("nan"), "paired bootstrap")
    lo, hi = np.percentile(reps, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    p = (1 + np.sum(np.abs(reps - d) >= abs(d) - 1e-12)) / (len(reps) + 1)
    return Comparison(d, float(lo), float(hi), float(min(1.0, p)), "paired bootstrap")


# -- DeLong -------------------------------------------------------------------------------------------

def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (O(n log n))."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # average of 1-based positions start+1 .. end
    ranks_sorted = np.repeat(avg, ends - starts)
    out = np.empty(len(x))
    out[order] = ranks_sorted
    return out


def structural_components(positive_scores: np.ndarray, negative_scores: np.ndarray):
    """(AUC, V10 per positive, V01 per negative) with midranks: V10_i = P(X_i > Y) + ½P(X_i = Y) over negatives Y,
    V01_j = P(X > Y_j) + ½P(X = Y_j) over positives X."""
    x, y = np.asarray(positive_scores, float), np.asarray(negative_scores, float)
    m, n = len(x), len(y)
    tz = midranks(np.r_[x, y])
    v10 = (tz[:m] - midranks(x)) / n
    v01 = 1.0 - (tz[m:] - midranks(y)) / m
    return float(v10.mean()), v10, v01


def _per_image_terms(y_pos: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray):
    """(AUC_a − AUC_b, per-image terms whose squares sum to DeLong's variance of the difference)."""
    pos, neg = np.flatnonzero(y_pos), np.flatnonzero(~y_pos)
    m, n = len(pos), len(neg)
    auc_a, v10a, v01a = structural_components(scores_a[pos], scores_a[neg])
    auc_b, v10b, v01b = structural_components(scores_b[pos], scores_b[neg])
    terms = np.zeros(len(y_pos))
    terms[pos] = ((v10a - auc_a) - (v10b - auc_b)) / math.sqrt(m * max(m - 1, 1))
    terms[neg] = ((v01a - auc_a) - (v01b - auc_b)) / math.sqrt(n * max(n - 1, 1))
    return auc_a - auc_b, terms


def delong(y_true: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, positive: int = 1) -> tuple[float, float]:
    """(AUC_a − AUC_b, variance of the difference) on one test set.

    Binary (K = 2): the AUC of the ``positive`` column, DeLong's variance S10/m + S01/n of the difference.
    Multi-class: the one-vs-rest macro AUC over the classes present (as ``metrics.compute_metrics``); the
    variance of the averaged difference sums the classes' per-image structural terms before squaring, so
    covariances between classes (the same image is a positive of one class and a negative of the others) count.
    """
    y = np.asarray(y_true, dtype=int)
    pa, pb = np.asarray(probs_a, float), np.asarray(probs_b, float)
    classes = [positive] if pa.shape[1] == 2 else [k for k in range(pa.shape[1]) if 0 < np.sum(y == k) < len(y)]
    if not classes or not all(0 < np.sum(y == k) < len(y) for k in classes):
        return float("nan"), float("nan")
    diff, total = 0.0, np.zeros(len(y))
    for k in classes:
        d, terms = _per_image_terms(y == k, pa[:, k], pb[:, k])
        diff += d / len(classes)
        total += terms / len(classes)
    return float(diff), float(np.sum(total ** 2))


def paired_delong(folds_a: Sequence[Dict], folds_b: Sequence[Dict], level: float = 0.95) -> Comparison:
    """DeLong over folds: the mean AUC difference, its standard error the mean of the folds' standard errors
    (an upper bound for correlated, overlapping folds; exact for one fold); normal interval and two-sided p."""
    check_paired(folds_a, folds_b)
    diffs, ses = [], []
    for a, b in zip(folds_a, folds_b):
        d, var = delong(a["y_true"], a["probs"], b["probs"], a.get("positive", 1))
        if not math.isnan(d):
            diffs.append(d)
            ses.append(math.sqrt(max(var, 0.0)))
    if not diffs:
        return Comparison(float("nan"), float("nan"), float("nan"), float("nan"), "DeLong")
    d, se = float(np.mean(diffs)), float(np.mean(ses))
    if se == 0.0:  # identical rankings in every fold
        return Comparison(d, d, d, 1.0 if d == 0.0 else 0.0, "DeLong")
    z = sps.norm.ppf((1 + level) / 2)
    return Comparison(d, d - z * se, d + z * se, float(2 * sps.norm.sf(abs(d) / se)), "DeLong")


# -- multiplicity -------------------------------------------------------------------------------------

def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm step-down adjusted p-values (NaNs stay NaN and do not count towards the family size)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="mergesort")]):
        running = max(running, (m - rank) * p[i])
        out[i] = min(1.0, running)
    return out.tolist()


def compare(folds_a: Sequence[Dict], folds_b: Sequence[Dict], metric: str, n_boot: int = 2000, seed: int = 0,
            level: float = 0.95) -> Optional[Comparison]:
    """The paired test that fits ``metric``: DeLong for AUC of single-label tasks, else the paired bootstrap."""
    if metric == "auc" and folds_a and folds_a[0].get("task", "multiclass") != "multilabel":
        return paired_delong(folds_a, folds_b, level)
    return paired_bootstrap(folds_a, folds_b, metric, n_boot, seed, level)
