"""Teacher-forced caption loss (masked-mean NLL: docs/reference.md#keepfit-ffa-captioner)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fundus_vlp.losses import caption as caption_module
from fundus_vlp.losses.caption import caption_loss, count_target_tokens

PAD = 0


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    # 2 sequences of length 4, vocab 5; the second has two trailing pads
    tokens = torch.tensor([[1, 3, 4, 2], [1, 2, PAD, PAD]])
    logits = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    return logits, tokens


def _manual_nll(logits: torch.Tensor, tokens: torch.Tensor, smoothing: float = 0.0) -> float:
    total, count = 0.0, 0
    B, L, V = logits.shape
    for b in range(B):
        for t in range(L - 1):
            target = int(tokens[b, t + 1])
            if target == PAD:
                continue
            row = [float(v) for v in logits[b, t]]
            log_norm = math.log(sum(math.exp(v) for v in row))
            log_probs = [v - log_norm for v in row]
            total += -(1 - smoothing) * log_probs[target] - smoothing * sum(log_probs) / V
            count += 1
    return total / count


def test_shift_and_pad_masking_match_loops():
    logits, tokens = _example()
    assert count_target_tokens(tokens, PAD).item() == 4  # 3 + 1 non-pad targets
    assert caption_loss(logits, tokens, PAD).item() == pytest.approx(_manual_nll(logits, tokens), rel=1e-6)


def test_pad_logits_do_not_matter():
    logits, tokens = _example()
    changed = logits.clone()
    changed[1, 2:] = 100.0  # positions predicting pads (and the unused last position)
    changed[0, 3] = -100.0  # last position predicts nothing
    torch.testing.assert_close(caption_loss(changed, tokens, PAD), caption_loss(logits, tokens, PAD))


def test_label_smoothing_passthrough():
    logits, tokens = _example()
    loss = caption_loss(logits, tokens, PAD, label_smoothing=0.1)
    assert loss.item() == pytest.approx(_manual_nll(logits, tokens, smoothing=0.1), rel=1e-6)
    reference = F.cross_entropy(
        logits[:, :-1].reshape(-1, 5), tokens[:, 1:].reshape(-1), ignore_index=PAD, label_smoothing=0.1
    )
    torch.testing.assert_close(loss, reference)


def test_explicit_mask_keeps_eos_equal_to_pad():
    # KeepFIT-FFA: id 0 is BOS, EOS and PAD; the mask keeps the EOS target
    tokens = torch.tensor([[0, 3, 4, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    logits = torch.randn(1, 5, 6, generator=torch.Generator().manual_seed(1))
    expected = F.cross_entropy(logits[0, :3], torch.tensor([3, 4, 0]))
    torch.testing.assert_close(caption_loss(logits, tokens, pad_id=0, mask=mask), expected)
    assert count_target_tokens(tokens, 0, mask).item() == 3


def test_global_token_count_scaling(monkeypatch):
    logits, tokens = _example()
    token_sum = caption_loss(logits, tokens, PAD) * 4
    loss = caption_loss(logits, tokens, PAD, global_token_count=torch.tensor(10))
    torch.testing.assert_close(loss, token_sum / 10)
    # on rank r of W, loss = sum_r / global_count * W, so DDP's mean over ranks gives the global token mean
    monkeypatch.setattr(caption_module.dist_utils, "get_world_size", lambda: 2)
    loss = caption_loss(logits, tokens, PAD, global_token_count=torch.tensor(10))
    torch.testing.assert_close(loss, token_sum / 10 * 2)
