"""FLAIR: label-aware soft-target contrastive learning on categorical data with expert-knowledge prompts
(docs/reference.md#flair-pretraining)."""
from __future__ import annotations

from ..losses import ClipLoss
from .base import Method, combine_losses, register_method


@register_method
class FLAIRMethod(Method):
    name = "flair"

    def __init__(self, model, options=None, bug_compat=None):
        super().__init__(model, options, bug_compat)
        # empty category masked out of the co-occurrence unless bug_compat (officially: mutual positives)
        self.public_loss = ClipLoss(empty_as_class=self.bug_compat.empty_category_as_class)

    def encode(self, batch):
        return self.encode_pair(batch["main"], "main")

    def public_contrastive(self, feats, batch):
        return self.public_loss(feats["main_image"], feats["main_text"], self.model.scale(),
                                labels=batch["main"]["labels"])

    def compute_losses(self, feats, batch):
        return combine_losses({"public": (1.0, self.public_contrastive(feats, batch))})
