"""KeepFIT v1 revision cross-attention (docs/reference.md#keepfit-v1-revision-attention)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fundus_vlp.models.revision import RevisionAttention, revision_loss

N, M, D, H = 3, 5, 8, 2


def _inputs(requires_grad: bool = False):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, D, generator=g).requires_grad_(requires_grad) for n in (N, M, M)]


def test_shapes():
    attn = RevisionAttention(dim=D, num_heads=H)
    out, weights = attn(*_inputs(), return_weights=True)
    assert out.shape == (N, D) and weights.shape == (H, N, M)
    assert attn(*_inputs()).shape == (N, D)
    assert all(getattr(attn, name).bias is None for name in ("W_q", "W_k", "W_v", "W_o"))


def test_default_weights_sum_to_one_over_keys():
    attn = RevisionAttention(dim=D, num_heads=H).eval()
    _, weights = attn(*_inputs(), return_weights=True)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(H, N))


def test_softmax_over_heads_reproduces_released_code():
    attn = RevisionAttention(dim=D, num_heads=H, softmax_over_heads=True).eval()
    q, k, _ = _inputs()
    _, weights = attn(*_inputs(), return_weights=True)
    torch.testing.assert_close(weights.sum(dim=0), torch.ones(N, M))
    # the released call: softmax with no dim on [h, N, M] (implicit dim 0)
    qh = attn.W_q(q).reshape(N, H, D // H).transpose(0, 1)
    kh = attn.W_k(k).reshape(M, H, D // H).transpose(0, 1)
    scores = qh @ kh.transpose(-2, -1) / math.sqrt(D // H)
    torch.testing.assert_close(weights, F.softmax(scores, dim=0))


def test_eval_output_matches_manual_and_has_no_dropout():
    attn = RevisionAttention(dim=D, num_heads=H, dropout=0.5).eval()
    q, k, v = _inputs()
    out, weights = attn(q, k, v, return_weights=True)
    torch.testing.assert_close(attn(q, k, v), out)  # deterministic
    vh = attn.W_v(v).reshape(M, H, D // H).transpose(0, 1)
    manual = attn.W_o((weights @ vh).transpose(0, 1).reshape(N, D))
    torch.testing.assert_close(out, manual)


def test_train_mode_applies_dropout():
    torch.manual_seed(0)
    attn = RevisionAttention(dim=D, num_heads=H, dropout=0.5)
    q, k, v = _inputs()
    assert not torch.allclose(attn.train()(q, k, v), attn.eval()(q, k, v))


def test_gradient_reaches_inputs_and_projections():
    attn = RevisionAttention(dim=D, num_heads=H, dropout=0.0)
    q, k, v = _inputs(requires_grad=True)
    text = torch.randn(N, D, requires_grad=True)
    revision_loss(text, attn(q, k, v)).backward()
    for t in (q, k, v, text):
        assert t.grad is not None and t.grad.abs().sum() > 0
    for name in ("W_q", "W_k", "W_v", "W_o"):
        assert getattr(attn, name).weight.grad.abs().sum() > 0


def test_revision_loss_is_elementwise_mean():
    text, revised = torch.randn(4, 6), torch.randn(4, 6)
    torch.testing.assert_close(revision_loss(text, revised), ((text - revised) ** 2).sum() / 24)
