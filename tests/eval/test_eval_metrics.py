"""Each metric against scikit-learn on toy inputs; fold aggregation; bootstrap; validation thresholds."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, cohen_kappa_score,
                             f1_score, roc_auc_score)
from sklearn.preprocessing import label_binarize

from fundus_vlp.eval.metrics import (_counting_replicates, aggregate_folds, bootstrap_ci, choose_threshold,
                                     compute_metrics, multilabel_metrics, predict_labels, task_metrics)


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 0, 1])
    probs = rng.dirichlet(np.ones(4), len(y))
    probs[np.arange(len(y))[:6], y[:6]] += 1.0  # some right, some wrong
    return y, probs / probs.sum(1, keepdims=True)


def test_multiclass_metrics_match_sklearn(toy):
    y, p = toy
    m = compute_metrics(y, p, "graded")
    pred = p.argmax(1)
    assert m["acc"] == pytest.approx(accuracy_score(y, pred))
    assert m["aca"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["aupr"] == pytest.approx(average_precision_score(label_binarize(y, classes=range(4)), p, average="macro"))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))


def test_binary_metrics_match_sklearn():
    y = np.array([0, 0, 0, 1, 1, 0, 1, 0])
    p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.2, 0.9, 0.6])
    probs = np.stack([1 - p1, p1], 1)
    m = compute_metrics(y, probs, "binary", positive=1)
    pred = (p1 >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["aupr"] == pytest.approx(average_precision_score(y, p1))
    assert m["f1_pos"] == pytest.approx(f1_score(y, pred))
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    # the positive class may be index 0 (AMD experiment: disease first)
    m0 = compute_metrics(1 - y, probs[:, ::-1], "binary", positive=0)
    assert m0["auc"] == pytest.approx(m["auc"]) and m0["f1_pos"] == pytest.approx(m["f1_pos"])


def test_task_metrics_are_task_appropriate():
    """No binary-only metrics on multi-class tasks; kappa only when graded."""
    assert "f1_pos" not in task_metrics("multiclass") and "kappa" not in task_metrics("multiclass")
    assert "kappa" in task_metrics("graded") and "f1_pos" in task_metrics("binary")
    with pytest.raises(ValueError):
        task_metrics("regression")


def test_auc_over_present_classes_when_a_class_is_missing():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]])
    m = compute_metrics(y, p)
    expect = np.mean([roc_auc_score(y == 0, p[:, 0]), roc_auc_score(y == 1, p[:, 1])])
    assert m["auc"] == pytest.approx(expect)


def test_multilabel_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (20, 3))
    s = rng.random((20, 3))
    m = multilabel_metrics(y, s)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s, average="macro"))
    assert m["aupr"] == pytest.approx(average_precision_score(y, s, average="macro"))
    assert m["f1_macro"] == pytest.approx(f1_score(y, s >= 0.5, average="macro"))


def test_threshold_from_validation_and_prediction():
    y_val = np.array([0, 0, 0, 1, 1])
    p_val = np.array([0.1, 0.2, 0.3, 0.25, 0.9])
    probs = np.stack([1 - p_val, p_val], 1)
    thr = choose_threshold(y_val, probs)
    pred = predict_labels(probs, thr)
    assert balanced_accuracy_score(y_val, pred) == max(
        balanced_accuracy_score(y_val, (p_val >= t).astype(int)) for t in p_val)
    assert choose_threshold(np.zeros(3, int), probs[:3]) is None  # one class: no threshold
    with pytest.raises(ValueError):
        predict_labels(np.ones((2, 3)) / 3, 0.5)


def test_aggregate_folds_population_std():
    out = aggregate_folds([{"aca": 0.5}, {"aca": 0.7}, {"aca": float("nan")}])
    assert out["mean"]["aca"] == pytest.approx(0.6)
    assert out["std"]["aca"] == pytest.approx(np.std([0.5, 0.7], ddof=0))


def test_counting_bootstrap_equals_sklearn_per_replicate(toy):
    y, p = toy
    pred = p.argmax(1)
    idx = np.random.default_rng(3).integers(0, len(y), (25, len(y)))
    reps = _counting_replicates(y, pred, idx, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true" on some replicates
        for b in range(25):
            assert reps["acc"][b] == pytest.approx(accuracy_score(y[idx[b]], pred[idx[b]]))
            assert reps["aca"][b] == pytest.approx(balanced_accuracy_score(y[idx[b]], pred[idx[b]]))


def test_bootstrap_is_seeded_and_brackets_the_mean(toy):
    y, p = toy
    folds = [{"y_true": y, "probs": p}, {"y_true": y[::-1], "probs": p[::-1]}]
    a = bootstrap_ci(folds, ["aca", "auc"], n_boot=40, seed=5)
    b = bootstrap_ci(folds, ["aca", "auc"], n_boot=40, seed=5)
    assert a == b
    point = compute_metrics(y, p)
    for name in ("aca", "auc"):
        lo, hi = a[name]
        assert lo <= point[name] <= hi
    assert bootstrap_ci(folds, ["aca"], n_boot=0) == {}
