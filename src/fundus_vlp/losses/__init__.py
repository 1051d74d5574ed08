"""Training objectives: CLIP / label-aware contrastive, caption (generative) and ViLReF WSC losses."""
from __future__ import annotations

from .caption import caption_loss, count_target_tokens
from .contrastive import ClipLoss, clip_logits, label_aware_targets, soft_target_cross_entropy
from .wsc import adjusted_cross_entropy, label_cosine_similarity, wsc_logit_adjustment, wsc_loss

__all__ = [
    "ClipLoss",
    "clip_logits",
    "label_aware_targets",
    "soft_target_cross_entropy",
    "caption_loss",
    "count_target_tokens",
    "label_cosine_similarity",
    "wsc_logit_adjustment",
    "adjusted_cross_entropy",
    "wsc_loss",
]
