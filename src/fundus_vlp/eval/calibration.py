"""Calibration of multi-label zero-shot probabilities: temperature scaling, per-label thresholds, ECE.

Multi-label zero-shot gives each label a logit z = s·(v·t⁺ − v·t⁻) and a probability sigmoid(z).
Those probabilities come from contrastive training, not from a likelihood, so they are usually over- or
under-confident. On a labelled validation set we fit

* one temperature T (all labels share it) minimising the binary cross-entropy of sigmoid(z / T): it
  changes confidence, never the ranking of images for a label;
* then, per label, the decision threshold on the calibrated probability that maximises F1 on the same
  set (0.5 when the set has no positive or no negative image of that label).

The expected calibration error (ECE) pools every (image, label) decision: the probabilities are put into
equal-width bins and ECE = Σ_b (n_b / n) · |mean(p in b) − fraction of positives in b|.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pandas as pd

DEFAULT_THRESHOLD = 0.5
ECE_BINS = 15
TEMPERATURE_RANGE = (0.01, 100.0)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # overflow-free


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Binary ECE over all entries of ``probs``/``targets`` (any shape, targets 0/1)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(targets, dtype=np.float64).ravel()
    if p.size == 0:
        raise ValueError("ECE of an empty set")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)  # p = 1.0 falls in the last bin
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(ece)


def binary_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))  # -[y log σ(z) + (1-y) log(1-σ(z))]


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The T in ``TEMPERATURE_RANGE`` minimising the BCE of sigmoid(logits / T) (a 1-D search over log T)."""
    from scipy.optimize import minimize_scalar

    lo, hi = np.log(TEMPERATURE_RANGE)
    res = minimize_scalar(lambda log_t: binary_cross_entropy(np.asarray(logits) / np.exp(log_t), targets),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def best_f1_threshold(probs: np.ndarray, targets: np.ndarray) -> float:
    """Threshold (predict positive when p >= t) with the highest F1; ties go to the higher threshold.

    Candidates lie midway between consecutive distinct probabilities (and at the lowest one), so a
    threshold never sits exactly on a validation probability where rounding could flip a decision.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets).astype(bool)
    if y.all() or not y.any():
        return DEFAULT_THRESHOLD
    best_t, best_f1 = DEFAULT_THRESHOLD, -1.0
    distinct = np.unique(p)
    for t in np.concatenate([distinct[:1], (distinct[:-1] + distinct[1:]) / 2]):
        pred = p >= t
        tp = float(np.sum(pred & y))
        f1 = 2 * tp / (pred.sum() + y.sum())
        if f1 >= best_f1:
            best_t, best_f1 = float(t), f1
    return best_t


@dataclass
class Calibration:
    """A fitted calibration; ``ece_before``/``ece_after`` are measured on the set it was fitted on."""

    temperature: float
    thresholds: Dict[str, float]
    ece_before: float
    ece_after: float
    n_images: int

    def to_dict(self) -> dict:
        return asdict(self)


def fit_calibration(logits: np.ndarray, targets: np.ndarray, labels: Sequence[str]) -> Calibration:
    """Temperature + per-label thresholds from validation logits (N×K) and 0/1 targets (N×K)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if z.shape != y.shape or z.ndim != 2 or z.shape[1] != len(labels):
        raise ValueError(f"logits {z.shape} and targets {y.shape} must both be N×{len(labels)}")
    if len(z) < 2:
        raise ValueError(f"calibration needs at least 2 labelled images, got {len(z)}")
    temperature = fit_temperature(z, y)
    calibrated = sigmoid(z / temperature)
    thresholds = {label: best_f1_threshold(calibrated[:, k], y[:, k]) for k, label in enumerate(labels)}
    return Calibration(temperature=temperature, thresholds=thresholds,
                       ece_before=expected_calibration_error(sigmoid(z), y),
                       ece_after=expected_calibration_error(calibrated, y), n_images=len(z))


def read_calibration_table(path: str | Path, labels: Sequence[str], root: str | Path | None = None):
    """(image paths, N×K 0/1 targets) from a labelled validation CSV; paths are relative to ``root``
    (default: the CSV's folder).

    Two layouts are accepted:

    * one 0/1 column per label: ``image,glaucoma,cataract`` (every label must have a column);
    * the project's categorical dataframe ``image, atributes, categories``: a label is positive when it is
      one of the row's categories (compared case-insensitively).
    """
    from ..data.dataframes import DataFormatError, read_categorical, resolve_image_path

    path = Path(path)
    root = Path(root) if root is not None else path.parent
    if not path.is_file():
        raise DataFormatError(f"{path}: calibration table not found")
    header = pd.read_csv(path, nrows=0).columns
    if all(label in header for label in labels):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "image" not in frame.columns:
            raise DataFormatError(f"{path}: missing column 'image'")
        targets = np.zeros((len(frame), len(labels)))
        for i, rec in enumerate(frame.to_dict("records"), start=1):
            for k, label in enumerate(labels):
                value = rec[label].strip()
                if value not in ("0", "1"):
                    raise DataFormatError(f"{path}, row {i}: column {label!r} must be 0 or 1, got {value!r}")
                targets[i - 1, k] = float(value)
        images = [resolve_image_path(root, rec["image"], path, i) for i, rec in enumerate(frame.to_dict("records"), 1)]
        return images, targets
    if "categories" in header:
        frame = read_categorical(path)
        wanted = [label.lower() for label in labels]
        targets = np.array([[float(w in {c.lower() for c in cats}) for w in wanted] for cats in frame["categories"]])
        images = [resolve_image_path(root, img, path, int(r)) for img, r in zip(frame["image"], frame["row"])]
        return images, targets.reshape(len(frame), len(labels))
    missing = [label for label in labels if label not in header]
    raise DataFormatError(f"{path}: no column for label(s) {missing}; give image + one 0/1 column per label, "
                          "or the categorical format image, atributes, categories")
