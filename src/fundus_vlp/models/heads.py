"""Projection heads: L2-norm → bias-free Linear → L2-norm (docs/reference.md#flair-model)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """L2-normalise -> Linear (bias-free by default) -> L2-normalise, as in FLAIR and KeepFIT.

    The attribute is called ``projection`` to keep FLAIR's checkpoint key names. ``kind="mlp"`` is
    Linear-ReLU-Linear of width ``in_dim`` (RET-CLIP's text heads); ``kind="none"`` passes the features
    through (a trunk whose pooled output is already the embedding). ``prenorm=False`` projects the raw
    features, as CLIP does (it matters once the projection has a bias, or for ``normalize=False``).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = False, kind: str = "linear", prenorm: bool = True):
        super().__init__()
        self.prenorm = prenorm
        if kind == "linear":
            self.projection = nn.Linear(in_dim, out_dim, bias=bias)
        elif kind == "mlp":
            self.projection = nn.Sequential(nn.Linear(in_dim, in_dim, bias=bias), nn.ReLU(),
                                            nn.Linear(in_dim, out_dim, bias=bias))
        elif kind == "none":
            if in_dim != out_dim:
                raise ValueError(f"projection 'none' needs the trunk width ({in_dim}) to equal embed_dim ({out_dim})")
            self.projection = nn.Identity()
        else:
            raise ValueError(f"unknown projection kind {kind!r}")

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.projection(F.normalize(x, dim=-1) if self.prenorm else x)
        return F.normalize(z, dim=-1) if normalize else z
