"""Few-shot adapters and the linear probe on synthetic features; no hyper-parameter sees test labels."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fundus_vlp.eval.adapters import ClipAdapter, TipAdapter, TipAdapterF, AdapterOptimCfg, ZeroShot, tip_logits
from fundus_vlp.eval.config import FEW_SHOT_METHODS, EvalCfg
from fundus_vlp.eval.linear_probe import LinearProbe
from fundus_vlp.eval.modes import fit_predict_few_shot
from fundus_vlp.eval.splits import make_splits

K, D = 3, 16


@pytest.fixture(scope="module")
def world():
    """Class clusters whose zero-shot prototypes of classes 1 and 2 are swapped: zero-shot is near 1/3 and
    every few-shot method must learn from the shots to do better."""
    rng = np.random.default_rng(0)
    centers = F.normalize(torch.tensor(rng.normal(size=(K, D)), dtype=torch.float32), dim=-1)
    y = np.repeat(np.arange(K), 30)
    X = F.normalize(centers[y] + 0.35 * torch.tensor(rng.normal(size=(len(y), D)), dtype=torch.float32), dim=-1)
    protos = F.normalize(centers[[0, 2, 1]] + 0.3 * torch.tensor(rng.normal(size=(K, D)), dtype=torch.float32), dim=-1)
    return X, y, protos


def small_cfg() -> EvalCfg:
    cfg = EvalCfg()
    cfg.few_shot.optim.epochs = 15
    cfg.few_shot.alphas = [0.0, 1.0, 10.0]
    cfg.few_shot.betas = [1.0, 5.0]
    cfg.few_shot.clip_adapter_ratios = [0.2, 0.6]
    cfg.linear_probe.c_grid = [0.1, 10.0, 1000.0]
    return cfg


def test_tip_adapter_with_alpha_zero_equals_zero_shot(world):
    X, y, T = world
    tip = TipAdapter(T, 20.0, alpha=0.0, beta=5.0).build_cache(X[:10], y[:10])
    torch.testing.assert_close(tip.logits(X), ZeroShot(T, 20.0).logits(X))
    np.testing.assert_allclose(tip.predict_proba(X), ZeroShot(T, 20.0).predict_proba(X), atol=1e-6)


def test_tip_adapter_uses_one_logit_form_and_the_model_scale(world):
    X, y, T = world
    tip = TipAdapterF(T, 7.5).fit(X[::3], y[::3], X[1::3], y[1::3], [0.5, 2.0], [2.0], AdapterOptimCfg(epochs=3))
    expect = 7.5 * X @ T.T + tip.alpha * torch.exp(-tip.beta * (1 - X @ tip.keys.T)) @ F.one_hot(
        torch.as_tensor(y[::3]), K).float()
    torch.testing.assert_close(tip.logits(X), expect)
    torch.testing.assert_close(tip.logits(X), tip_logits(X, tip.keys, tip.values, T, 7.5, tip.alpha, tip.beta))
    assert not torch.equal(tip.keys, X[::3])  # the keys were trained


def test_adapters_improve_on_zero_shot(world):
    X, y, T = world
    split = make_splits(y, 0, 10, 5, 0.3)
    zs = (ZeroShot(T, 30.0).predict_proba(X[split.test]).argmax(1) == y[split.test]).mean()
    for method in FEW_SHOT_METHODS:
        _, pt, hp = fit_predict_few_shot(method, X, y, split, T, 30.0, small_cfg(), K)
        acc = (pt.argmax(1) == y[split.test]).mean()
        # CLIP-Adapter's residual A(x) = ReLU(...) lives in the positive orthant, so it can only partly
        # re-route swapped prototypes; the cache and the probe can fully.
        margin = 0.05 if method == "clip_adapter" else 0.3
        assert acc >= zs + margin, (method, acc, zs, hp)
        assert pt.shape == (len(split.test), K)
        np.testing.assert_allclose(pt.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("method", FEW_SHOT_METHODS)
def test_no_hyperparameter_or_prediction_depends_on_test_labels(world, method):
    """Corrupt the test labels: chosen α/β/ratio/C and all predictions must not change."""
    X, y, T = world
    split = make_splits(y, 1, 5, 5, 0.3)
    y_bad = y.copy()
    y_bad[split.test] = (y_bad[split.test] + 1) % K
    a = fit_predict_few_shot(method, X, y, split, T, 30.0, small_cfg(), K)
    b = fit_predict_few_shot(method, X, y_bad, split, T, 30.0, small_cfg(), K)
    assert a[2] == b[2]
    np.testing.assert_allclose(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])


def test_clip_adapter_ratio_chosen_on_validation(world):
    X, y, T = world
    ad = ClipAdapter(T, 30.0, reduction=4).fit(X[:45:3], y[:45:3], X[1::3], y[1::3], [0.2, 0.8], AdapterOptimCfg(epochs=5))
    assert ad.hparams["ratio"] in (0.2, 0.8)
    assert ad.module.w1.shape == (1, D // 4, D) and ad.module.w2.shape == (1, D, D // 4)  # bottleneck, no bias
    assert len(list(ad.module.parameters())) == 2


def test_joint_ratio_training_equals_separate_training(world):
    """The ratio bank trains each adapter exactly as if it were trained alone (same init, same batches)."""
    X, y, T = world
    cfg = AdapterOptimCfg(epochs=3, min_steps=10, seed=3)
    joint = ClipAdapter(T, 30.0).train_bank(X[::2], y[::2], [0.2, 0.6], cfg)
    alone = ClipAdapter(T, 30.0).train_bank(X[::2], y[::2], [0.2], cfg)
    torch.testing.assert_close(joint.w1[0], alone.w1[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(joint.w2[0], alone.w2[0], atol=1e-5, rtol=1e-4)


def test_linear_probe_c_on_validation_and_fixed_c(world):
    X, y, _ = world
    Xn = X.numpy()
    lp = LinearProbe(K, c_grid=[1e-3, 1.0, 100.0]).fit(Xn[::2], y[::2], Xn[1::2], y[1::2])
    assert lp.hparams["C"] in (1e-3, 1.0, 100.0)
    fixed = LinearProbe(K, c=0.316).fit(Xn[::2], y[::2])
    assert fixed.hparams["C"] == 0.316
    with pytest.raises(ValueError, match="validation"):
        LinearProbe(K).fit(Xn[::2], y[::2])


@pytest.mark.parametrize("classes", [[0, 1], [0, 1, 2]])
def test_probe_torch_head_matches_sklearn(world, classes):
    X, y, _ = world
    keep = np.isin(y, classes)
    Xk, yk = X.numpy()[keep], y[keep]
    lp = LinearProbe(len(classes), c=1.0).fit(Xk, yk)
    head = lp.torch_head()
    with torch.no_grad():
        probs = head(torch.as_tensor(Xk)).softmax(-1).numpy()
    np.testing.assert_allclose(probs, lp.predict_proba(Xk), atol=1e-5)


def test_selection_score_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score, log_loss

    from fundus_vlp.eval.adapters import selection_score

    rng = np.random.default_rng(2)
    y = np.array([0, 0, 1, 2, 2, 2, 1, 0])
    p = rng.dirichlet(np.ones(4), len(y))  # a class (3) absent from y, as with few validation shots
    ba, neg_ll = selection_score(y, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        assert ba == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))
    assert -neg_ll == pytest.approx(log_loss(y, p, labels=np.arange(4)))


def test_image_only_adapters_prototype_and_knn():
    """No text needed: class means and nearest neighbours of the support features; hyper-parameters on val."""
    from fundus_vlp.eval.adapters import ClassPrototypes, NearestNeighbours

    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 3.0
    y = np.repeat(np.arange(3), 4)
    X = torch.nn.functional.normalize(torch.tensor(centres[y] + rng.normal(0, 0.3, (12, 8)), dtype=torch.float32), dim=1)
    yv = np.repeat(np.arange(3), 2)
    Xv = torch.nn.functional.normalize(torch.tensor(centres[yv] + rng.normal(0, 0.3, (6, 8)), dtype=torch.float32), dim=1)
    proto = ClassPrototypes(3).fit(X, y, Xv, yv, temperatures=[1.0, 30.0])
    probs = proto.predict_proba(Xv)
    assert (probs.argmax(1) == yv).all() and np.allclose(probs.sum(1), 1.0)
    want = torch.nn.functional.normalize(torch.stack([X[y == k].mean(0) for k in range(3)]), dim=1)
    torch.testing.assert_close(proto.prototypes, want)
    assert proto.hparams == {"temperature": 30.0}  # separable: the sharper τ has the lower validation log-loss
    knn = NearestNeighbours(4).fit(X.numpy(), y, Xv.numpy(), yv, neighbours=[1, 3])
    p = knn.predict_proba(X.numpy())
    assert p.shape == (12, 4) and (p[:, 3] == 0).all()  # a class without shots gets probability 0
    assert (p.argmax(1) == y).all() and knn.hparams["k"] in (1, 3)
