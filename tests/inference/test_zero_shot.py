"""Zero-shot prototypes (inference/zero_shot.py): prompt ensembles, re-normalisation, multi-label pairs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fundus_vlp.inference.zero_shot import (build_multilabel_classifier, build_zero_shot_classifier, class_prompts,
                                          multilabel_logits, to_probabilities, zero_shot_logits)

E = torch.eye(4)


class StubModel:
    """encode_text returns a chosen unit vector per prompt; encode_image returns the given vectors."""

    def __init__(self, table):
        self.table = table  # prompt -> vector
        self.prompts = []
        self.tokenizer = self._tok

    def _tok(self, texts):
        start = len(self.prompts)
        self.prompts += list(texts)
        return torch.arange(start, start + len(texts))

    def eval(self):
        return self

    def encode_text(self, ids, normalize=True, project=True):
        return torch.stack([F.normalize(self.table[self.prompts[int(i)]], dim=0) for i in ids])

    def scale(self):
        return torch.tensor(10.0)


class StubKB:
    def __init__(self):
        self.data = {"glaucoma": ["big cup", "thin rim"]}

    def descriptions(self, label):
        return self.data.get(label, [])  # returns its own list on purpose: callers must not mutate it


def test_known_prototypes_give_known_answer():
    table = {"A fundus photograph of normal": E[0], "A fundus photograph of glaucoma": E[1],
             "A fundus photograph of big cup": E[1], "A fundus photograph of thin rim": E[2]}
    model, kb = StubModel(table), StubKB()
    protos = build_zero_shot_classifier(model, ["normal", "glaucoma"], knowledge=kb)
    expect_glaucoma = F.normalize((E[1] + E[1] + E[2]) / 3, dim=0)
    torch.testing.assert_close(protos[0], E[0])
    torch.testing.assert_close(protos[1], expect_glaucoma)
    images = torch.stack([E[0], F.normalize(E[1] + 0.1 * E[2], dim=0), E[2]])
    probs = to_probabilities(zero_shot_logits(images, protos, 10.0), multilabel=False)
    assert probs.argmax(1).tolist() == [0, 1, 1]
    logits = 10.0 * images @ protos.T
    torch.testing.assert_close(probs, logits.softmax(-1))
    assert kb.data == {"glaucoma": ["big cup", "thin rim"]}  # never mutated


def test_renormalised_vs_unnormalised_prototypes():
    table = {"A fundus photograph of a": E[0], "A fundus photograph of b": E[1], "A fundus photograph of x": E[2],
             "A fundus photograph of y": E[3]}
    kb = type("KB", (), {"descriptions": lambda self, c: {"a": ["x"], "b": ["b"]}.get(c, [])})()
    model = StubModel(table)
    norm = build_zero_shot_classifier(model, ["a", "b"], knowledge=kb)
    raw = build_zero_shot_classifier(model, ["a", "b"], knowledge=kb, normalize=False)
    torch.testing.assert_close(norm.norm(dim=1), torch.ones(2))
    assert raw[0].norm() == pytest.approx(2 ** -0.5, rel=1e-5)  # mean of two orthogonal unit vectors
    assert raw[1].norm() == pytest.approx(1.0)  # "b" and its identical description deduplicated
    torch.testing.assert_close(F.normalize(raw, dim=1), norm)


def test_class_prompts_templates_and_dedup():
    kb = StubKB()
    p = class_prompts("glaucoma", ["A fundus photograph of {}", "An image of [CLS]"], kb)
    assert p == ["A fundus photograph of glaucoma", "A fundus photograph of big cup", "A fundus photograph of thin rim",
                 "An image of glaucoma", "An image of big cup", "An image of thin rim"]
    assert class_prompts("normal", knowledge=None) == ["A fundus photograph of normal"]
    with pytest.raises(ValueError):
        class_prompts("x", ["no slot here"])


def test_multilabel_pairs():
    table = {"A fundus photograph of drusen": E[0], "A fundus photograph with no drusen": E[1],
             "A fundus photograph of cup": E[2], "A fundus photograph with no cup": E[3]}
    pos, neg = build_multilabel_classifier(StubModel(table), ["drusen", "cup"])
    x = torch.stack([F.normalize(E[0] + E[3], dim=0)])
    s = to_probabilities(multilabel_logits(x, pos, neg, 10.0), multilabel=True)
    d = 2 ** -0.5
    expect = torch.sigmoid(torch.tensor([[10 * d, -10 * d]]))
    torch.testing.assert_close(s, expect)


def test_real_tiny_model_prototypes_are_unit_and_deterministic():
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    model = create_model("tiny")
    a = build_zero_shot_classifier(model, ["normal", "glaucoma", "cataract"])
    b = build_zero_shot_classifier(model, ["normal", "glaucoma", "cataract"])
    torch.testing.assert_close(a, b)
    np.testing.assert_allclose(a.norm(dim=1).numpy(), 1.0, rtol=1e-5)
