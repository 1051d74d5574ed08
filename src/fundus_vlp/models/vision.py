"""Image tower: a timm trunk (``num_classes=0``) plus a projection head."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import timm
import torch
from torch import nn

from ..config import VisionCfg
from .heads import ProjectionHead


def _load_local_trunk_weights(trunk: nn.Module, path: str) -> None:
    """Load a local timm checkpoint safely (safetensors, or torch.load with weights_only)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"vision.pretrained points to {p}, which is not a file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("fc.", "head.", "classifier."))]
    unexpected = [k for k in unexpected if not k.startswith(("fc.", "head.", "classifier."))]
    if missing or unexpected:
        raise ValueError(f"{p}: does not match {type(trunk).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def last_stage_name(trunk: nn.Module) -> str:
    """Name (in ``trunk``) of its last stage: timm's last feature module, else its last child module."""
    info = getattr(trunk, "feature_info", None)
    if info:
        return info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
    return list(dict(trunk.named_children()))[-1]


class ImageTower(nn.Module):
    def __init__(self, cfg: VisionCfg, embed_dim: int, projection_bias: bool = False):
        super().__init__()
        use_hub = cfg.pretrained is True
        self.trunk = timm.create_model(cfg.timm_model_name, pretrained=use_hub, num_classes=0, **cfg.timm_kwargs)
        if isinstance(cfg.pretrained, str) and cfg.pretrained:
            _load_local_trunk_weights(self.trunk, cfg.pretrained)
        self.width = self.trunk.num_features
        bias = projection_bias if cfg.projection_bias is None else cfg.projection_bias
        self.head = ProjectionHead(self.width, embed_dim, bias=bias, kind=cfg.projection,
                                   prenorm=cfg.projection_prenorm)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unpooled trunk output: B×C×H×W for CNNs, B×N×C for transformers."""
        return self.trunk.forward_features(images)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_head(features, pre_logits=True)

    @staticmethod
    def tokens(features: torch.Tensor) -> torch.Tensor:
        """Patch/grid tokens B×N×C for cross-attention (the caption decoder)."""
        if features.ndim == 4:  # CNN grid: B×C×H×W -> B×HW×C
            return features.flatten(2).transpose(1, 2)
        return features

    def forward(self, images: torch.Tensor, project: bool = True, normalize: bool = True) -> torch.Tensor:
        pooled = self.pool(self.forward_features(images))
        return self.head(pooled, normalize=normalize) if project else pooled

    def forward_with_tokens(self, images: torch.Tensor, normalize: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """One trunk pass giving both the projected embedding and the grid tokens."""
        feats = self.forward_features(images)
        return self.head(self.pool(feats), normalize=normalize), self.tokens(feats)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)
