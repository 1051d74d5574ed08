"""Benchmark statistics against hand computations, brute force and scipy."""
import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from fundus_vlp.eval.stats import (delong, holm, midranks, paired_bootstrap, paired_delong, structural_components,
                                   t_interval)


def _fold(y, probs, task="multiclass"):
    return {"y_true": np.asarray(y), "probs": np.asarray(probs, float), "threshold": None, "positive": 1, "task": task}


def _onehot_probs(pred, k, rng=None, noise=0.0):
    p = np.full((len(pred), k), 0.1 / (k - 1))
    p[np.arange(len(pred)), pred] = 0.9
    if noise:
        p = p + noise * rng.random(p.shape)
        p /= p.sum(1, keepdims=True)
    return p


def test_t_interval_matches_hand_computation():
    # [1, 2, 3, 4]: mean 2.5, s = sqrt(5/3) = 1.29099, t(0.975, 3) = 3.18245 -> half width 2.05426
    mean, lo, hi = t_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert lo == pytest.approx(2.5 - 2.05426, abs=1e-5) and hi == pytest.approx(2.5 + 2.05426, abs=1e-5)
    m1, lo1, hi1 = t_interval([0.7])
    assert m1 == 0.7 and math.isnan(lo1) and math.isnan(hi1)


def test_holm_matches_hand_example():
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> step-down maximum keeps 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.5, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # 0.8·2 capped at 1; the larger p cannot fall below it


def test_midranks_average_ties():
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def _brute_components(x, y):
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    return psi.mean(), psi.mean(1), psi.mean(0)


def test_delong_binary_equals_brute_force_with_ties():
    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 2, n)
    a = np.round(y * 0.8 + rng.normal(0, 0.6, n), 1)  # rounded: many ties
    b = np.round(y * 0.3 + rng.normal(0, 0.6, n), 1)
    pos, neg = y == 1, y == 0
    auc, v10, v01 = structural_components(a[pos], a[neg])
    bauc, bv10, bv01 = _brute_components(a[pos], a[neg])
    assert auc == pytest.approx(bauc) and auc == pytest.approx(roc_auc_score(y, a))
    np.testing.assert_allclose(v10, bv10)
    np.testing.assert_allclose(v01, bv01)
    # DeLong 1988: var(A - B) = c' S10 c / m + c' S01 c / n with the 2x2 covariance of the components
    _, bv10b, bv01b = _brute_components(b[pos], b[neg])
    c = np.array([1.0, -1.0])
    want = c @ np.cov(np.stack([bv10, bv10b])) @ c / pos.sum() + c @ np.cov(np.stack([bv01, bv01b])) @ c / neg.sum()
    probs = lambda s: np.stack([1 - s, s], 1)  # noqa: E731
    d, var = delong(y, probs(a), probs(b))
    assert d == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert var == pytest.approx(want, rel=1e-10)


def test_delong_multiclass_brute_force():
    """Macro one-vs-rest: per-image terms of all classes summed before squaring (brute-force components)."""
    rng = np.random.default_rng(1)
    n, k = 45, 3
    y = rng.integers(0, k, n)
    pa = rng.dirichlet(np.ones(k), n) + 0.5 * np.eye(k)[y]
    pb = rng.dirichlet(np.ones(k), n)
    total, diff = np.zeros(n), 0.0
    for c in range(k):
        pos, neg = y == c, y != c
        m, q = pos.sum(), neg.sum()
        aa, a10, a01 = _brute_components(pa[pos, c], pa[neg, c])
        ab, b10, b01 = _brute_components(pb[pos, c], pb[neg, c])
        diff += (aa - ab) / k
        t = np.zeros(n)
        t[pos] = ((a10 - aa) - (b10 - ab)) / math.sqrt(m * (m - 1))
        t[neg] = ((a01 - aa) - (b01 - ab)) / math.sqrt(q * (q - 1))
        total += t / k
    d, var = delong(y, pa, pb)
    macro = lambda p: roc_auc_score(np.eye(k)[y], p, average="macro")  # noqa: E731
    assert d == pytest.approx(macro(pa) - macro(pb)) and d == pytest.approx(diff)
    assert var == pytest.approx(np.sum(total ** 2))


def test_delong_detects_a_better_ranker_and_not_a_copy():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    good = np.stack([1 - (y + rng.normal(0, 0.5, 200)), y + rng.normal(0, 0.5, 200)], 1)
    bad = np.stack([np.zeros(200), rng.normal(0, 1, 200)], 1)
    folds_good = [_fold(y, good, "binary")]
    assert paired_delong(folds_good, [_fold(y, bad, "binary")]).p < 1e-6
    same = paired_delong(folds_good, [_fold(y, good, "binary")])
    assert same.diff == 0.0 and same.p == 1.0


def test_identical_models_no_difference():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(3), 40)
    folds = [_fold(y, probs), _fold(y[:30], probs[:30])]
    for metric in ("aca", "acc", "f1_macro"):
        r = paired_bootstrap(folds, [dict(f) for f in folds], metric, n_boot=40)
        assert r.diff == 0.0 and r.p == 1.0 and r.lo == 0.0 and r.hi == 0.0


def test_paired_bootstrap_ci_matches_scipy_bootstrap():
    """One fold, accuracy: the difference is the mean of per-image (correct_a − correct_b), so the paired
    bootstrap's percentile interval is scipy's percentile bootstrap of that mean (up to resampling noise)."""
    rng = np.random.default_rng(4)
    n, k = 300, 3
    y = rng.integers(0, k, n)
    pred_a = np.where(rng.random(n) < 0.75, y, (y + 1) % k)
    pred_b = np.where(rng.random(n) < 0.6, y, (y + 2) % k)
    r = paired_bootstrap([_fold(y, _onehot_probs(pred_a, k))], [_fold(y, _onehot_probs(pred_b, k))], "acc",
                         n_boot=5000, seed=0)
    d = (pred_a == y).astype(float) - (pred_b == y)
    ref = sps.bootstrap((d,), np.mean, n_resamples=5000, method="percentile", random_state=0).confidence_interval
    assert r.diff == pytest.approx(d.mean())
    assert r.lo == pytest.approx(ref.low, abs=0.01) and r.hi == pytest.approx(ref.high, abs=0.01)
    # and the closed form: normal approximation of a mean of paired differences
    se = d.std(ddof=1) / math.sqrt(n)
    assert r.lo == pytest.approx(d.mean() - 1.96 * se, abs=0.01)
    assert r.p == pytest.approx(2 * sps.norm.sf(abs(d.mean()) / se), abs=0.005)


def test_paired_bootstrap_refuses_unpaired_test_sets():
    y = np.array([0, 1, 0, 1])
    p = _onehot_probs(y, 2)
    with pytest.raises(ValueError, match="same test images"):
        paired_bootstrap([_fold(y, p)], [_fold(y[::-1], p)], "aca", n_boot=10)
