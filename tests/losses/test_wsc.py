"""ViLReF WSC loss: the properties of the reconstruction (docs/reference.md#vilref-wsc-loss);
queue and EMA ones in test_momentum.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import unit
from fundus_vlp.losses.contrastive import ClipLoss
from fundus_vlp.losses.wsc import (
    adjusted_cross_entropy,
    label_cosine_similarity,
    wsc_logit_adjustment,
    wsc_loss,
)
from fundus_vlp.models.momentum import FeatureQueue

SCALE = torch.tensor(1 / 0.07)


def _no_queue_loss(img, txt, labels, **kwargs):
    valid = torch.ones(img.shape[0], dtype=torch.bool)
    return wsc_loss(img, txt, img, txt, labels, labels, valid, SCALE, **kwargs)


def test_label_cosine_similarity_values_and_normal():
    rows = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    bank = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    W = label_cosine_similarity(rows, bank)
    torch.testing.assert_close(W[0], torch.tensor([1 / math.sqrt(2), 1.0, 0.0, 0.0]))
    torch.testing.assert_close(W[1], torch.zeros(4))
    W_normal = label_cosine_similarity(rows, bank, normal_index=2)  # empty rows become "normal" (index 2)
    torch.testing.assert_close(W_normal[1], torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_zero_similarity_without_queue_equals_clip_infonce():
    """W ≡ 0 and K = 0 gives the CLIP InfoNCE of the released code."""
    img, txt = unit(5, 8, seed=0), unit(5, 8, seed=1)
    expected = ClipLoss()(img, txt, SCALE)
    zero_labels = torch.zeros(5, 3)  # all-zero labels and no normal_index: W ≡ 0
    torch.testing.assert_close(_no_queue_loss(img, txt, zero_labels), expected)
    distinct = torch.eye(5)  # W = I: only the positives are similar
    torch.testing.assert_close(_no_queue_loss(img, txt, distinct), expected)


def test_fully_masked_rows_give_zero_loss():
    """Every candidate but the positive eliminated → loss 0."""
    img, txt = unit(4, 8, seed=2), unit(4, 8, seed=3)
    same_labels = torch.tensor([[1.0, 0.0, 1.0]]).repeat(4, 1)
    loss = _no_queue_loss(img, txt, same_labels)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    # also with invalid queue slots appended
    bank_img = torch.cat([img, unit(3, 8, seed=4)])
    bank_txt = torch.cat([txt, unit(3, 8, seed=5)])
    bank_labels = torch.cat([same_labels, torch.tensor([[0.0, 1.0, 0.0]]).repeat(3, 1)])
    valid = torch.tensor([True] * 4 + [False] * 3)
    loss = wsc_loss(img, txt, bank_img, bank_txt, same_labels, bank_labels, valid, SCALE)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_gradient_scales_linearly_with_weight():
    """∂L/∂S_ij ∝ ω_ij for kept negatives (same logit, different weights)."""
    W = torch.tensor([[1.0, 0.8, 0.4, 0.0, 1.0]])
    valid = torch.ones(5, dtype=torch.bool)
    A = wsc_logit_adjustment(W, torch.tensor([0]), valid)
    torch.testing.assert_close(A[0, :4], torch.tensor([0.0, math.log(0.2), math.log(0.6), 0.0]))
    assert A[0, 4] == float("-inf")  # false negative

    S = torch.tensor([[2.0, 0.5, 0.5, 0.5, 0.5]], requires_grad=True)
    adjusted_cross_entropy(S, A, torch.tensor([0])).backward()
    g = S.grad[0]
    assert g[1] / g[2] == pytest.approx(0.2 / 0.6, rel=1e-5)
    assert g[3] / g[2] == pytest.approx(1.0 / 0.6, rel=1e-5)
    assert g[4] == 0.0  # eliminated: neither pushed nor pulled
    # closed form: ω_ij e^{S_ij} / Σ_k ω_ik e^{S_ik}
    omega = torch.tensor([1.0, 0.2, 0.6, 1.0])
    p = omega * S.detach()[0, :4].exp()
    p = p / p.sum()
    torch.testing.assert_close(g[1:4], p[1:4])
    # finite-difference check of one entry
    h = 1e-3
    def loss_at(delta: float) -> float:
        S2 = S.detach().clone()
        S2[0, 2] += delta
        return adjusted_cross_entropy(S2.double(), A.double(), torch.tensor([0])).item()
    assert (loss_at(h) - loss_at(-h)) / (2 * h) == pytest.approx(g[2].item(), rel=1e-4)


def test_w_min_and_gamma():
    W = torch.tensor([[1.0, 0.5, 0.9]])
    A = wsc_logit_adjustment(W, torch.tensor([0]), torch.ones(3, dtype=torch.bool), gamma=2.0, w_min=0.1)
    torch.testing.assert_close(A[0], torch.tensor([0.0, math.log(0.25), math.log(0.1)]))


def test_invalid_queue_slots_are_ignored():
    img, txt = unit(3, 8, seed=6), unit(3, 8, seed=7)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    queue = FeatureQueue(size=4, dim=8, num_labels=2)
    queue.enqueue(unit(2, 8, seed=8), unit(2, 8, seed=9), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    bank_img, bank_txt, bank_labels, valid = queue.candidates(img, txt, labels)
    assert valid.tolist() == [True] * 3 + [True, True, False, False]
    with_queue = wsc_loss(img, txt, bank_img, bank_txt, labels, bank_labels, valid, SCALE)
    # garbage in the invalid slots changes nothing
    bank_img2, bank_txt2 = bank_img.clone(), bank_txt.clone()
    bank_img2[-2:], bank_txt2[-2:] = img[:2], txt[:2]
    torch.testing.assert_close(wsc_loss(img, txt, bank_img2, bank_txt2, labels, bank_labels, valid, SCALE), with_queue)
    # and a fully invalid queue equals no queue
    none_valid = torch.tensor([True] * 3 + [False] * 4)
    torch.testing.assert_close(
        wsc_loss(img, txt, bank_img, bank_txt, labels, bank_labels, none_valid, SCALE),
        _no_queue_loss(img, txt, labels),
    )


def test_queue_candidates_receive_gradient_only_through_online_features():
    img = unit(3, 8, seed=10).requires_grad_(True)
    txt = unit(3, 8, seed=11).requires_grad_(True)
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    bank_img, bank_txt = unit(5, 8, seed=12), unit(5, 8, seed=13)
    bank_labels = torch.cat([labels, torch.tensor([[1.0, 1.0], [0.0, 1.0]])])
    loss = wsc_loss(img, txt, bank_img, bank_txt, labels, bank_labels, torch.ones(5, dtype=torch.bool), SCALE)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()


def test_soft_target_variant_matches_manual():
    img, txt = unit(3, 4, seed=14), unit(3, 4, seed=15)
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    valid = torch.ones(3, dtype=torch.bool)
    loss = wsc_loss(img, txt, img, txt, labels, labels, valid, SCALE, variant="soft_target")
    W = label_cosine_similarity(labels, labels)
    q = W / W.sum(dim=1, keepdim=True)
    expected = 0.5 * (
        F.cross_entropy(SCALE * img @ txt.T, q) + F.cross_entropy(SCALE * txt @ img.T, q)
    )
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError):
        wsc_loss(img, txt, img, txt, labels, labels, valid, SCALE, variant="nope")


def test_soft_target_variant_ignores_invalid_slots():
    img, txt = unit(2, 4, seed=16), unit(2, 4, seed=17)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank_labels = torch.cat([labels, torch.tensor([[1.0, 0.0]])])
    bank_img, bank_txt = torch.cat([img, unit(1, 4, seed=18)]), torch.cat([txt, unit(1, 4, seed=19)])
    valid = torch.tensor([True, True, False])
    loss = wsc_loss(img, txt, bank_img, bank_txt, labels, bank_labels, valid, SCALE, variant="soft_target")
    expected = wsc_loss(img, txt, img, txt, labels, labels, valid[:2], SCALE, variant="soft_target")
    torch.testing.assert_close(loss, expected)
