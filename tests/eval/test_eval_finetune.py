"""Fine-tuning modes set the intended trainable parameters; LP-FT starts from the probe; selection on val."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fundus_vlp.eval.config import FinetuneCfg
from fundus_vlp.eval.finetune import (FINETUNE_MODES, ImageClassifier, configure_trainable, finetune,
                                      predict, set_train_mode)
from fundus_vlp.eval.linear_probe import LinearProbe


@pytest.fixture(scope="module")
def model():
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    return create_model("tiny")


def _clf(model, mode):
    import copy

    clf = ImageClassifier(copy.deepcopy(model.visual), 3, project=True, embed_dim=model.cfg.embed_dim)
    configure_trainable(clf, mode)
    return clf


def test_modes_choose_trainable_parameters(model):
    ft = _clf(model, "ft")
    assert all(p.requires_grad for p in ft.parameters())
    last = _clf(model, "last_block")
    trainable = {n for n, p in last.named_parameters() if p.requires_grad}
    assert any(n.startswith("visual.trunk.layer4.") for n in trainable)
    assert not any(n.startswith(("visual.trunk.layer1.", "visual.trunk.conv1")) for n in trainable)
    assert {"head.weight", "head.bias", "visual.head.projection.weight"} <= trainable
    bn = _clf(model, "frozen_bn")
    for m in bn.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert not any(p.requires_grad for p in m.parameters())
    set_train_mode(bn, "frozen_bn")
    assert all(not m.training for m in bn.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    assert bn.head.training
    set_train_mode(last, "last_block")
    assert not last.visual.trunk.layer1.training and last.visual.trunk.layer4.training
    with pytest.raises(ValueError):
        configure_trainable(ft, "freeze_all")
    assert set(FINETUNE_MODES) == {"ft", "lp_ft", "last_block", "frozen_bn"}


def test_lp_ft_head_reproduces_the_probe_and_selection_uses_val(model, tmp_path):
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(18):
        c = i % 3
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.clip(rng.normal(50 + 70 * c, 20, (40, 40, 3)), 0, 255).astype(np.uint8)).save(p)
        paths.append(p)
        labels.append(c)
    labels = np.array(labels)
    where = [f"t.csv, row {i + 1}" for i in range(18)]
    from fundus_vlp.inference.embedding import extract_features

    X = extract_features(model, paths, progress=False).numpy()
    tr, va = np.arange(0, 12), np.arange(12, 18)
    probe = LinearProbe(3, c=1.0).fit(X[tr], labels[tr])
    head = probe.torch_head()
    clf = ImageClassifier(model.visual, 3, True, model.cfg.embed_dim, head=head)
    probs = predict(clf, paths, where, model.cfg.preprocess, 4, torch.device("cpu"))
    np.testing.assert_allclose(probs, probe.predict_proba(X), atol=1e-4)
    settings = FinetuneCfg(mode="lp_ft", epochs=2, batch_size=4, patience=1)
    clf2, info = finetune(model, paths, where, labels, tr, va, 3, settings, init_head=head, progress=False)
    assert info["best_epoch"] in (0, 1) and len(info["history"]) >= 1
    assert all("val_f1_macro" in h and isinstance(h["trivial"], bool) for h in info["history"])
    assert info["stop_reason"] in ("completed", "patience") and info["val_probs"].shape == (len(va), 3)
    best = info["history"][info["best_epoch"]]
    assert best["selected"] and best["val_f1_macro"] == info["best_val_f1_macro"]
    np.testing.assert_allclose(predict(clf2, [paths[i] for i in va], [where[i] for i in va], model.cfg.preprocess,
                                       4, torch.device("cpu")), info["val_probs"], atol=1e-5)  # restored weights
    with pytest.raises(ValueError, match="validation"):
        finetune(model, paths, where, labels, tr, np.array([], int), 3, settings, progress=False)
