"""Label-aware targets and ClipLoss (docs/reference.md#label-aware-contrastive-loss) in a single process."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import unit
from fundus_vlp.losses.contrastive import ClipLoss, clip_logits, label_aware_targets, soft_target_cross_entropy


def test_label_aware_targets_square_block_structure():
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    Y = label_aware_targets(labels, labels)
    torch.testing.assert_close(Y.sum(dim=1), torch.ones(6))
    torch.testing.assert_close(Y.sum(dim=0), torch.ones(6))
    torch.testing.assert_close(Y, Y.T)
    for i in range(6):
        for j in range(6):
            n_class = int((labels == labels[i]).sum())
            expected = 1.0 / n_class if labels[i] == labels[j] else 0.0
            assert Y[i, j].item() == pytest.approx(expected)


def test_label_aware_targets_empty_category_masking():
    labels = torch.tensor([-1, 3, -1, 3])
    masked = label_aware_targets(labels, labels)
    # empty samples are positives only of themselves
    torch.testing.assert_close(masked[0], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(masked[2], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(masked[1], torch.tensor([0.0, 0.5, 0.0, 0.5]))
    torch.testing.assert_close(masked, masked.T)
    # official behaviour: "" is one class
    as_class = label_aware_targets(labels, labels, empty_as_class=True)
    torch.testing.assert_close(as_class[0], torch.tensor([0.5, 0.0, 0.5, 0.0]))


def test_label_aware_targets_rectangular_rank_block():
    global_labels = torch.tensor([5, 7, 5, -1, 7, 7])
    rows = global_labels[3:]  # "rank 1" of 2 with n = 3
    Y = label_aware_targets(rows, global_labels, row_offset=3)
    assert Y.shape == (3, 6)
    torch.testing.assert_close(Y.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(Y, label_aware_targets(global_labels, global_labels)[3:])
    torch.testing.assert_close(Y[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0]))  # empty sample: own column
    with pytest.raises(ValueError):
        label_aware_targets(rows, global_labels, row_offset=4)


def test_soft_target_loss_matches_explicit_loops():
    labels = torch.tensor([0, 1, 0, 1])
    img, txt = unit(4, 3, seed=0), unit(4, 3, seed=1)
    scale = 10.0
    loss = ClipLoss()(img, txt, torch.tensor(scale), labels=labels)

    def ce_soft(logit_rows: list[list[float]]) -> float:
        total = 0.0
        for i in range(4):
            log_norm = math.log(sum(math.exp(v) for v in logit_rows[i]))
            n_i = sum(1 for k in range(4) if labels[k] == labels[i])
            for j in range(4):
                y_ij = (1.0 / n_i) if labels[i] == labels[j] else 0.0
                total -= y_ij * (logit_rows[i][j] - log_norm)
        return total / 4

    L = [[scale * float(img[i] @ txt[j]) for j in range(4)] for i in range(4)]
    L_t = [[L[j][i] for j in range(4)] for i in range(4)]
    expected = 0.5 * (ce_soft(L) + ce_soft(L_t))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_soft_target_cross_entropy_formula():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    expected = F.cross_entropy(logits, targets)  # PyTorch probability targets
    torch.testing.assert_close(soft_target_cross_entropy(logits, targets), expected)


def test_identity_targets_match_open_clip():
    open_clip = pytest.importorskip("open_clip")
    img, txt = unit(6, 8, seed=2), unit(6, 8, seed=3)
    scale = torch.tensor(14.3)
    expected = open_clip.loss.ClipLoss()(img, txt, scale)
    torch.testing.assert_close(ClipLoss()(img, txt, scale), expected)
    # all-distinct labels reduce to identity targets
    torch.testing.assert_close(ClipLoss()(img, txt, scale, labels=torch.arange(6)), expected)


def test_clip_logits_single_process_and_fp32():
    img, txt = unit(3, 4, seed=4).half(), unit(3, 4, seed=5).half()
    logits_per_image, logits_per_text, offset = clip_logits(img, txt, torch.tensor(2.0))
    assert offset == 0 and logits_per_image.dtype == torch.float32
    torch.testing.assert_close(logits_per_text, logits_per_image.T)
    torch.testing.assert_close(logits_per_image, 2.0 * img.float() @ txt.float().T)


def test_clip_loss_gradients_flow_to_features_and_scale():
    img = unit(4, 5, seed=6).requires_grad_(True)
    txt = unit(4, 5, seed=7).requires_grad_(True)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    ClipLoss()(img, txt, log_scale.exp(), labels=torch.tensor([0, 0, 1, -1])).backward()
    for t in (img, txt, log_scale):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_logits_stay_fp32_under_autocast():
    img, txt = unit(4, 8, seed=8), unit(4, 8, seed=9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits_per_image, _, _ = clip_logits(img, txt, 10.0)
        loss = ClipLoss()(img, txt, torch.tensor(10.0))
    assert logits_per_image.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(logits_per_image, 10.0 * img @ txt.T)
    torch.testing.assert_close(loss, ClipLoss()(img, txt, torch.tensor(10.0)))
