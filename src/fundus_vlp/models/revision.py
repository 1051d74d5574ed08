"""KeepFIT v1 image-similarity-guided text revision (docs/reference.md#keepfit-v1-revision-attention).

Public images (queries) attend over elite images (keys) to mix the elite captions (values); the revised text is
regressed onto the public text embeddings with :func:`revision_loss` (λ_rev = 100 in v1).
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RevisionAttention", "revision_loss"]


class RevisionAttention(nn.Module):
    """Multi-head cross-attention without biases: ``W_o · concat_h(α_h · V W_v)``, ``α_h = softmax(Q_h K_hᵀ/√d_h)``.

    Args:
        dim: query, key, value and output size (512 in v1).
        num_heads: heads; each gets ``dim // num_heads`` contiguous features (2 in v1).
        dropout: dropout on the attention weights (0.5 in v1).
        softmax_over_heads: ``bug_compat.softmax_over_heads``. The released code calls ``softmax`` without ``dim``
            on a ``[h, N, M]`` tensor, which normalises over the heads (dim 0). The default
            normalises over the ``M`` keys, as the paper describes.

    Parameter names ``W_q, W_k, W_v, W_o`` match the released checkpoints.
    """

    def __init__(self, dim: int = 512, num_heads: int = 2, dropout: float = 0.5, softmax_over_heads: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.softmax_over_heads = softmax_over_heads
        self.W_q = nn.Linear(dim, dim, bias=False)
        self.W_k = nn.Linear(dim, dim, bias=False)
        self.W_v = nn.Linear(dim, dim, bias=False)
        self.W_o = nn.Linear(dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def _split_heads(self, x: Tensor) -> Tensor:
        """``[L, D] -> [h, L, D/h]`` (heads are contiguous feature chunks, as in v1)."""
        return x.reshape(x.shape[0], self.num_heads, self.head_dim).transpose(0, 1)

    def attention_weights(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Attention weights ``[h, N, M]`` before dropout."""
        scores = self._split_heads(self.W_q(queries)) @ self._split_heads(self.W_k(keys)).transpose(-2, -1)
        scores = scores / math.sqrt(self.head_dim)
        return F.softmax(scores, dim=0 if self.softmax_over_heads else -1)

    def forward(
        self, queries: Tensor, keys: Tensor, values: Tensor, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``queries [N, D]``, ``keys [M, D]``, ``values [M, D]`` -> revised ``[N, D]`` (not normalised, as in v1).

        With ``return_weights`` also returns the weights ``[h, N, M]`` before dropout.
        """
        weights = self.attention_weights(queries, keys)
        heads = self.dropout(weights) @ self._split_heads(self.W_v(values))  # [h, N, D/h]
        revised = self.W_o(heads.transpose(0, 1).reshape(queries.shape[0], self.dim))
        return (revised, weights) if return_weights else revised


def revision_loss(text_features: Tensor, revised: Tensor) -> Tensor:
    """``MSE(T, R)``, mean over all elements; gradients flow into both sides, as in v1."""
    return F.mse_loss(revised.float(), text_features.float())
