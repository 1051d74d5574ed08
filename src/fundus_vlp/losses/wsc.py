"""ViLReF Weighted Similarity Coupling (WSC) loss with false-negative elimination (docs/reference.md#vilref-wsc-loss).

This is a reconstruction: label cosine similarity ``W`` between each anchor and every candidate of the bank
``[momentum batch; queue]`` turns into a logit adjustment ``log ω_ij`` with ``ω_ij = max(ω_min, (1 − W_ij)^γ)``;
candidates sharing the anchor's label set (``W_ij ≥ δ``) and unfilled queue slots get ``−∞``. The positive of row
``i`` is the bank column ``positive_index[i]`` (column ``i`` when the bank starts with the momentum batch).

``variant="soft_target"`` is the alternative reading of "coupling": no elimination, FLAIR-style soft
targets ``q_ij = W_ij / Σ_k W_ik``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["label_cosine_similarity", "wsc_logit_adjustment", "adjusted_cross_entropy", "wsc_loss"]

WSC_VARIANTS = ("eliminate", "soft_target")


def _fill_normal(labels: Tensor, normal_index: int | None) -> Tensor:
    if normal_index is None:
        return labels
    empty = labels.sum(dim=-1) == 0
    labels = labels.clone()
    labels[empty, normal_index] = 1.0
    return labels


def label_cosine_similarity(
    row_labels: Tensor, bank_labels: Tensor, eps: float = 1e-8, normal_index: int | None = None
) -> Tensor:
    """``W_ij = ⟨y_i, ỹ_j⟩ / (‖y_i‖‖ỹ_j‖ + eps)`` for multi-hot labels: ``[B, C] x [B+K, C] -> [B, B+K]``.

    The reconstruction treats a sample without any label as "normal": pass ``normal_index`` to give all-zero rows that one-hot
    first. Without it an all-zero row has ``W = 0`` with every candidate (never eliminated, always fully pushed).
    """
    rows = _fill_normal(row_labels.float(), normal_index)
    bank = _fill_normal(bank_labels.float(), normal_index)
    dots = rows @ bank.T
    norms = rows.norm(dim=-1, keepdim=True) * bank.norm(dim=-1).unsqueeze(0)
    return dots / (norms + eps)


def _positive_mask(shape: torch.Size, positive_index: Tensor) -> Tensor:
    mask = torch.zeros(shape, dtype=torch.bool, device=positive_index.device)
    mask[torch.arange(shape[0], device=positive_index.device), positive_index] = True
    return mask


def wsc_logit_adjustment(
    W: Tensor,
    positive_index: Tensor,
    valid: Tensor,
    delta: float = 1 - 1e-6,
    gamma: float = 1.0,
    w_min: float = 0.0,
) -> Tensor:
    """``A_ij = log ω_ij`` with ``ω_ij = max(w_min, (1 − W_ij)^γ)``; ``0`` at the positive; ``−∞`` where
    ``W_ij ≥ δ`` (false-negative elimination) and at invalid bank columns. Shape ``[B, B+K]``, no gradient.
    """
    W = W.detach().float()
    weights = (1.0 - W).clamp_min(0.0).pow(gamma).clamp_min(w_min)
    adjustment = weights.log()
    adjustment = adjustment.masked_fill((W >= delta) | ~valid.reshape(1, -1), float("-inf"))
    return adjustment.masked_fill(_positive_mask(W.shape, positive_index.to(W.device)), 0.0)


def adjusted_cross_entropy(logits: Tensor, adjustment: Tensor, positive_index: Tensor) -> Tensor:
    """``CE(S + A, positive)``; for a kept negative ``∂L/∂S_ij ∝ ω_ij e^{S_ij}`` (the "push speed")."""
    return F.cross_entropy(logits.float() + adjustment, positive_index)


def _soft_target_cross_entropy(logits: Tensor, W: Tensor, positive_index: Tensor, valid: Tensor) -> Tensor:
    """``−Σ_j q_ij log softmax(S_i)_j`` with ``q_ij = W_ij / Σ_k W_ik`` over valid columns (positive forced to 1)."""
    invalid = ~valid.reshape(1, -1).expand_as(W)
    similarity = W.detach().float().clamp(0.0, 1.0).masked_fill(invalid, 0.0)
    similarity = similarity.masked_fill(_positive_mask(W.shape, positive_index), 1.0)
    targets = similarity / similarity.sum(dim=-1, keepdim=True)
    log_probs = F.log_softmax(logits.float().masked_fill(invalid, float("-inf")), dim=-1)
    return -(targets * log_probs.masked_fill(targets == 0, 0.0)).sum(dim=-1).mean()


def wsc_loss(
    image_features: Tensor,
    text_features: Tensor,
    bank_image: Tensor,
    bank_text: Tensor,
    row_labels: Tensor,
    bank_labels: Tensor,
    bank_valid: Tensor,
    logit_scale: Tensor | float,
    positive_index: Tensor | None = None,
    delta: float = 1 - 1e-6,
    gamma: float = 1.0,
    w_min: float = 0.0,
    variant: str = "eliminate",
    normal_index: int | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """``½(CE(s·v·T̃ᵀ + A, pos) + CE(s·t·Ṽᵀ + A, pos))``, ``A`` the label-similarity logit adjustment.

    Args:
        image_features, text_features: online ``v, t`` ``[B, D]`` (unit norm, with gradient).
        bank_image, bank_text: candidates ``Ṽ, T̃`` ``[B'+K, D]`` = momentum batch then queue (no gradient).
        row_labels ``[B, C]``, bank_labels ``[B'+K, C]``: multi-hot labels; bank_valid ``[B'+K]`` bool.
        logit_scale: the multiplier ``1/τ`` (already exponentiated).
        positive_index: bank column of each row's positive; default ``arange(B)``.
        variant: ``"eliminate"`` (default, the abstract's "eliminating false negatives") or ``"soft_target"``.
    """
    if variant not in WSC_VARIANTS:
        raise ValueError(f"unknown WSC variant {variant!r}; expected one of {WSC_VARIANTS}")
    device = image_features.device
    if positive_index is None:
        positive_index = torch.arange(image_features.shape[0], device=device)
    scale = torch.as_tensor(logit_scale, device=device).float()
    logits_i2t = scale * image_features.float() @ bank_text.float().T
    logits_t2i = scale * text_features.float() @ bank_image.float().T
    W = label_cosine_similarity(row_labels, bank_labels, eps=eps, normal_index=normal_index)
    valid = bank_valid.to(device=device, dtype=torch.bool)

    if variant == "soft_target":
        return 0.5 * (
            _soft_target_cross_entropy(logits_i2t, W, positive_index, valid)
            + _soft_target_cross_entropy(logits_t2i, W, positive_index, valid)
        )
    adjustment = wsc_logit_adjustment(W, positive_index, valid, delta=delta, gamma=gamma, w_min=w_min)
    return 0.5 * (
        adjusted_cross_entropy(logits_i2t, adjustment, positive_index)
        + adjusted_cross_entropy(logits_t2i, adjustment, positive_index)
    )
