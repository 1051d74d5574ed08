"""Projection heads: L2-norm → bias-free Linear → L2-norm (docs/reference.md#flair-model)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """L2-normalise -> Linear (bias-free by default) -> L2-normalise, as in FLAIR and KeepFIT.

    The attribute is called ``projection`` to keep FLAIR's checkpoint key names.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = False):
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.projection(F.normalize(x, dim=-1))
        return F.normalize(z, dim=-1) if normalize else z
