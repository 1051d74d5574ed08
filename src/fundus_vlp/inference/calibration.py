"""Calibration of zero-shot probabilities on a labelled validation set, with an honest report of how well it did.

Zero-shot logits come from contrastive training, not from a likelihood, so their probabilities are usually
over- or under-confident, and differently so for each label. Fitted maps:

* **multi-label, Platt (default)**: per label, p = sigmoid(a·z + b) with a scale *and* a bias, fitted by
  maximum likelihood with Platt's smoothed targets ((N₊+1)/(N₊+2) and 1/(N₋+2)), so perfectly separated
  labels still get finite parameters. One shared temperature without a bias cannot move a label whose
  logits sit on the wrong side of 0, which is why it is not offered for multi-label;
* **multi-label, isotonic**: per label, a monotone step function of z (scikit-learn's
  ``IsotonicRegression``), linear between its knots, clipped outside them;
* **single-label, temperature**: softmax(z / T) with one T for all labels (it never changes the argmax).

A label needs at least ``MIN_PER_CLASS`` positive and as many negative images; otherwise it is left
uncalibrated (sigmoid(z), threshold 0.5), and ``Calibration.uncalibrated`` says why. When no label can be
calibrated, fitting is an error that names the labels and their counts: a one-class table is never
"fitted silently".

**The report is measured on images the fit did not see**: k-fold cross-fitting (k = ``folds``, fewer when a
label has fewer images of a class), where each image's calibrated probability comes from the map fitted on
the other folds. The returned map itself is fitted on every image. ECE (equal-width bins; multi-label pools
every (image, label) decision, single-label uses the top label's confidence against its accuracy) and the
Brier score are given before and after, next to a trivial baseline (0.5 for every multi-label decision,
1/K for every single-label class): a calibration that does not beat it is not worth applying.

A ``Calibration`` is plain data: ``save``/``load`` write and read JSON (no pickle), so Python, ``predict``
and the web app share one file.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

CALIBRATION_FORMAT = 1
MULTILABEL_METHODS = ("platt", "isotonic")
DEFAULT_METHOD = "platt"
DEFAULT_FOLDS = 5
DEFAULT_THRESHOLD = 0.5
MIN_PER_CLASS = 2  # positives and negatives a label needs: one of each in a training fold and one held out
ECE_BINS = 15
TEMPERATURE_RANGE = (0.01, 100.0)


# -- measures -------------------------------------------------------------------------------------------

def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # overflow-free


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Binary ECE over all entries of ``probs``/``targets`` (any shape, targets 0/1):
    Σ_b (n_b / n) · |mean(p in b) − fraction of positives in b| over equal-width bins."""
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


def top_label_ece(probs: np.ndarray, classes: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Single-label ECE: the confidence of the top label against whether it is right."""
    probs = np.asarray(probs, dtype=np.float64)
    return expected_calibration_error(probs.max(axis=1), probs.argmax(axis=1) == np.asarray(classes), n_bins)


def brier_score(probs: np.ndarray, onehot: np.ndarray, multilabel: bool) -> float:
    """Mean squared error of the probabilities: per decision (multi-label) or summed over labels per image."""
    sq = (np.asarray(probs, dtype=np.float64) - np.asarray(onehot, dtype=np.float64)) ** 2
    return float(sq.mean() if multilabel else sq.sum(axis=1).mean())


def binary_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))  # -[y log σ(z) + (1-y) log(1-σ(z))]


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


# -- the fitted maps ------------------------------------------------------------------------------------

def fit_platt(z: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    """(a, b) of sigmoid(a·z + b), maximum likelihood on Platt's smoothed targets."""
    from scipy.optimize import minimize

    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(ab):
        u = ab[0] * z + ab[1]
        r = sigmoid(u) - t
        return np.mean(np.logaddexp(0.0, u) - t * u), np.array([np.mean(r * z), np.mean(r)])

    prior = np.log((n_pos + 1) / (n_neg + 1))
    res = minimize(loss, np.array([1.0, prior]), jac=True, method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


def fit_isotonic(z: np.ndarray, y: np.ndarray) -> Tuple[List[float], List[float]]:
    """Knots (x, p) of the monotone map of z to the frequency of positives (linear between knots)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return [float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_]


def fit_temperature(logits: np.ndarray, classes: np.ndarray) -> float:
    """The T in ``TEMPERATURE_RANGE`` minimising the cross-entropy of softmax(logits / T) (1-D search on log T)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64)
    idx = np.asarray(classes, dtype=int)

    def nll(log_t):
        s = z / np.exp(log_t)
        return float(np.mean(logsumexp(s, axis=1) - s[np.arange(len(s)), idx]))

    lo, hi = np.log(TEMPERATURE_RANGE)
    return float(np.exp(minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6}).x))


@dataclass
class LabelMap:
    """How one label's logit becomes a probability: ``platt`` (a, b), ``isotonic`` (knots) or ``none``."""

    kind: str = "none"
    a: float = 1.0
    b: float = 0.0
    knots_x: List[float] = field(default_factory=list)
    knots_p: List[float] = field(default_factory=list)

    def apply(self, z: np.ndarray) -> np.ndarray:
        if self.kind == "platt":
            return sigmoid(self.a * np.asarray(z, dtype=np.float64) + self.b)
        if self.kind == "isotonic":
            return np.interp(np.asarray(z, dtype=np.float64), self.knots_x, self.knots_p)
        return sigmoid(z)


def _fit_label(z: np.ndarray, y: np.ndarray, method: str) -> LabelMap:
    if method == "platt":
        a, b = fit_platt(z, y)
        return LabelMap("platt", a=a, b=b)
    xs, ps = fit_isotonic(z, y)
    return LabelMap("isotonic", knots_x=xs, knots_p=ps)


@dataclass
class CalibrationReport:
    """Measured on held-out predictions (``evaluation`` says how); ``baseline`` is the trivial constant."""

    n_images: int
    evaluation: str
    ece_before: float
    ece_after: float
    brier_before: float
    brier_after: float
    ece_baseline: float
    brier_baseline: float
    baseline: str


@dataclass
class Calibration:
    """A fitted calibration: ``apply(logits) -> probabilities``; per-label ``thresholds`` for multi-label."""

    labels: List[str]
    multilabel: bool
    method: str
    temperature: Optional[float] = None  # single-label
    maps: Dict[str, LabelMap] = field(default_factory=dict)  # multi-label, one per label
    thresholds: Dict[str, float] = field(default_factory=dict)
    uncalibrated: Dict[str, str] = field(default_factory=dict)  # label -> why it was left as it was
    report: Optional[CalibrationReport] = None

    def apply(self, logits) -> np.ndarray:
        """N×K probabilities from N×K zero-shot logits of the same labels, in the same order."""
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != len(self.labels):
            raise ValueError(f"calibration for {len(self.labels)} labels {self.labels} applied to logits of shape "
                             f"{z.shape}")
        if not self.multilabel:
            return softmax(z / self.temperature)
        return np.stack([self.maps[c].apply(z[:, k]) for k, c in enumerate(self.labels)], axis=1)

    def check_labels(self, labels: Sequence[str], multilabel: bool) -> None:
        if list(labels) != self.labels or bool(multilabel) != self.multilabel:
            kind = "multi-label" if self.multilabel else "single-label"
            raise ValueError(f"this calibration is for the {kind} labels {self.labels}; got "
                             f"{'multi-label' if multilabel else 'single-label'} {list(labels)}")

    def summary(self) -> str:
        """One paragraph for people: what was fitted and how well, measured on held-out images."""
        r = self.report
        what = (f"temperature {self.temperature:.3f}" if not self.multilabel
                else f"per-label {self.method} scaling")
        text = f"calibration ({what})"
        if r is not None:
            text += (f" on {r.n_images} images; {r.evaluation}: ECE {r.ece_before:.4f} -> {r.ece_after:.4f}, "
                     f"Brier {r.brier_before:.4f} -> {r.brier_after:.4f} ({r.baseline}: ECE {r.ece_baseline:.4f}, "
                     f"Brier {r.brier_baseline:.4f})")
        if self.thresholds:
            text += "; thresholds " + ", ".join(f"{c}={t:.3f}" for c, t in self.thresholds.items())
        for label, why in self.uncalibrated.items():
            text += f"\nlabel {label!r} left uncalibrated: {why}"
        return text

    # -- JSON ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": CALIBRATION_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "Calibration":
        try:
            if data.get("format", 0) > CALIBRATION_FORMAT:
                raise ValueError(f"format {data['format']} is newer than this fundus-vlp")
            maps = {k: LabelMap(**v) for k, v in (data.get("maps") or {}).items()}
            report = CalibrationReport(**data["report"]) if data.get("report") else None
            cal = cls(labels=list(data["labels"]), multilabel=bool(data["multilabel"]), method=str(data["method"]),
                      temperature=data.get("temperature"), maps=maps,
                      thresholds={k: float(v) for k, v in (data.get("thresholds") or {}).items()},
                      uncalibrated=dict(data.get("uncalibrated") or {}), report=report)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"{source}: not a fundus-vlp calibration file ({exc})") from None
        missing = [c for c in cal.labels if cal.multilabel and c not in cal.maps]
        if missing or (not cal.multilabel and not cal.temperature):
            raise ValueError(f"{source}: calibration without a map for {missing or 'the temperature'}")
        return cal

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable calibration JSON file ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a fundus-vlp calibration file (no JSON object)")
        return cls.from_dict(data, str(path))


# -- fitting --------------------------------------------------------------------------------------------

def _fold_ids(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per image, stratified by ``y`` (0/1 or class index)."""
    from sklearn.model_selection import StratifiedKFold

    ids = np.zeros(len(y), dtype=int)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for f, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        ids[test] = f
    return ids


def _class_counts(y: np.ndarray) -> Tuple[int, int]:
    n_pos = int(y.sum())
    return n_pos, len(y) - n_pos


def fit_multilabel(logits: np.ndarray, targets: np.ndarray, labels: Sequence[str], method: str = DEFAULT_METHOD,
                   folds: int = DEFAULT_FOLDS, seed: int = 0) -> Calibration:
    if method not in MULTILABEL_METHODS:
        raise ValueError(f"multi-label calibration method must be one of {MULTILABEL_METHODS}, got {method!r}")
    z, y = logits, targets
    cal = Calibration(labels=list(labels), multilabel=True, method=method)
    held_out = sigmoid(z)  # uncalibrated labels keep sigmoid(z) in the report too
    k_used = []
    for k, label in enumerate(labels):
        n_pos, n_neg = _class_counts(y[:, k])
        if min(n_pos, n_neg) < MIN_PER_CLASS:
            cal.uncalibrated[label] = (f"{n_pos} positive and {n_neg} negative images; calibration needs at least "
                                       f"{MIN_PER_CLASS} of each")
            cal.maps[label] = LabelMap("none")
            cal.thresholds[label] = DEFAULT_THRESHOLD
            continue
        cal.maps[label] = _fit_label(z[:, k], y[:, k], method)
        cal.thresholds[label] = best_f1_threshold(cal.maps[label].apply(z[:, k]), y[:, k])
        n_folds = min(folds, n_pos, n_neg)
        k_used.append(n_folds)
        ids = _fold_ids(y[:, k], n_folds, seed)
        for f in range(n_folds):
            train, test = ids != f, ids == f
            held_out[test, k] = _fit_label(z[train, k], y[train, k], method).apply(z[test, k])
    if len(cal.uncalibrated) == len(labels):
        raise ValueError("cannot calibrate: no label has both positive and negative images ("
                         + "; ".join(f"{c}: {why}" for c, why in cal.uncalibrated.items()) + ")")
    cal.report = _report(sigmoid(z), held_out, y, y, True, _folds_text(k_used, seed))
    cal.held_out = (sigmoid(z), held_out, y)  # for the reliability diagram; not part of the saved file
    return cal


def fit_single_label(logits: np.ndarray, classes: np.ndarray, labels: Sequence[str], folds: int = DEFAULT_FOLDS,
                     seed: int = 0) -> Calibration:
    z, c = logits, np.asarray(classes, dtype=int)
    present = np.unique(c)
    if len(present) < 2:
        only = labels[int(present[0])] if len(present) else "none"
        raise ValueError(f"cannot calibrate: every calibration image has the same label ({only!r}); temperature "
                         f"scaling needs images of at least two labels")
    cal = Calibration(labels=list(labels), multilabel=False, method="temperature", temperature=fit_temperature(z, c))
    n_folds = min(folds, len(c) // MIN_PER_CLASS)
    if n_folds < 2:
        raise ValueError(f"cannot calibrate on {len(c)} images: cross-fitting needs at least {2 * MIN_PER_CLASS}")
    from sklearn.model_selection import KFold

    held_out = np.zeros_like(z)
    for train, test in KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(z):
        held_out[test] = softmax(z[test] / fit_temperature(z[train], c[train]))
    onehot = np.eye(len(labels))[c]
    cal.report = _report(softmax(z), held_out, onehot, c, False, _folds_text([n_folds], seed))
    before = softmax(z)
    cal.held_out = (before.max(axis=1), held_out.max(axis=1), (held_out.argmax(axis=1) == c).astype(float))
    return cal


def _folds_text(k_used: Sequence[int], seed: int) -> str:
    ks = sorted(set(k_used))
    k = str(ks[0]) if len(ks) == 1 else f"{ks[0]}-{ks[-1]}"
    return (f"held-out by {k}-fold cross-fitting (seed {seed}; each image calibrated by a fit that did not see "
            f"it)")


def _report(before: np.ndarray, after: np.ndarray, onehot: np.ndarray, truth: np.ndarray, multilabel: bool,
            evaluation: str) -> CalibrationReport:
    if multilabel:
        ece = lambda p: expected_calibration_error(p, truth)  # noqa: E731
        baseline, constant = "constant 0.5", np.full_like(before, 0.5)
    else:
        ece = lambda p: top_label_ece(p, truth)  # noqa: E731
        baseline, constant = "uniform 1/K", np.full_like(before, 1.0 / before.shape[1])
    return CalibrationReport(n_images=len(before), evaluation=evaluation, ece_before=ece(before),
                             ece_after=ece(after), brier_before=brier_score(before, onehot, multilabel),
                             brier_after=brier_score(after, onehot, multilabel), ece_baseline=ece(constant),
                             brier_baseline=brier_score(constant, onehot, multilabel), baseline=baseline)


def fit_calibration(logits, targets, labels: Sequence[str], multilabel: bool = True, method: str = DEFAULT_METHOD,
                    folds: int = DEFAULT_FOLDS, seed: int = 0) -> Calibration:
    """Fit a calibration on validation logits (N×K) and targets: N×K 0/1 (multi-label), or class indices N
    (or one-hot N×K) for single-label. ``method``: ``platt`` or ``isotonic`` (multi-label)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != len(labels):
        raise ValueError(f"logits of shape {z.shape}: expected N×{len(labels)} for labels {list(labels)}")
    if len(y) != len(z):
        raise ValueError(f"{len(z)} rows of logits but {len(y)} of targets")
    if not multilabel:
        classes = y.argmax(axis=1) if y.ndim == 2 else y.astype(int)
        return fit_single_label(z, classes, labels, folds, seed)
    if y.shape != z.shape:
        raise ValueError(f"targets of shape {y.shape}: expected {z.shape} (one 0/1 column per label)")
    return fit_multilabel(z, y, labels, method, folds, seed)


# -- reliability diagram ----------------------------------------------------------------------------------

def reliability_diagram(calibration: Calibration, path: str | Path, n_bins: int = 10) -> Path:
    """Observed frequency against mean probability per bin, before and after calibration (the held-out
    probabilities of the cross-fitting), as a PNG. Multi-label: every (image, label) decision; single-label:
    the top label's confidence against whether it is right. Only a freshly fitted calibration has them."""
    from matplotlib.figure import Figure

    held_out = getattr(calibration, "held_out", None)
    if held_out is None:
        raise ValueError("a reliability diagram needs a calibration fitted in this session (a loaded file keeps "
                         "only its report)")
    before, after, targets = held_out
    title = "multi-label decisions" if calibration.multilabel else "top-label confidence"

    fig = Figure(figsize=(4.8, 4.6), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#888", lw=1, ls="--", label="perfect calibration")
    for probs, name, colour in ((before, "before", "#e49b3a"), (after, "after (held-out)", "#2a6fb0")):
        p, y = np.asarray(probs, float).ravel(), np.asarray(targets, float).ravel()
        bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
        xs = [p[bins == b].mean() for b in range(n_bins) if (bins == b).any()]
        ys = [y[bins == b].mean() for b in range(n_bins) if (bins == b).any()]
        ax.plot(xs, ys, marker="o", color=colour, label=f"{name}, ECE {expected_calibration_error(p, y):.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"reliability: {title}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# -- labelled tables ---------------------------------------------------------------------------------------

def read_calibration_table(path: str | Path, labels: Sequence[str], root: str | Path | None = None):
    """(image paths, N×K 0/1 targets) from a labelled validation CSV; paths are relative to ``root``
    (default: the CSV's folder).

    Two layouts are accepted:

    * one 0/1 column per label: ``image,glaucoma,cataract`` (every label must have a column);
    * the project's categorical dataframe ``image, atributes, categories``: a label is positive when it is
      one of the row's categories (compared case-insensitively).
    """
    import pandas as pd

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


def single_label_classes(targets: np.ndarray, labels: Sequence[str], source: str) -> np.ndarray:
    """Class indices from 0/1 rows that must each name exactly one label (single-label calibration)."""
    counts = np.asarray(targets).sum(axis=1)
    bad = np.flatnonzero(counts != 1)
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{source}, row {i + 1}: single-label calibration needs exactly one of {list(labels)} per "
                         f"image, found {int(counts[i])}")
    return np.asarray(targets).argmax(axis=1)
