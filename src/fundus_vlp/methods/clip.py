"""CLIP: symmetric InfoNCE on image–text pairs (identity targets)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..data.config import DataNeeds
from ..losses import ClipLoss
from .base import Method, combine_losses, register_method


@dataclass
class CLIPCfg:
    use_elite: bool = False  # also train on elite captions as plain pairs (a "naive pooling" baseline)


@register_method
class CLIPMethod(Method):
    """Plain CLIP on the main stream: categorical samples as "A fundus photograph of <label>" prompts
    (no expert-knowledge augmentation), plus elite captions when ``clip.use_elite`` pools them in.
    Same-class samples in a batch are negatives here — the limitation FLAIR's label-aware targets fix."""

    name = "clip"
    options_class = CLIPCfg
    data = DataNeeds(augment_description=False)

    @classmethod
    def data_needs(cls, options=None):
        return replace(cls.data, pool_elite=(options or cls.default_options()).use_elite)

    def __init__(self, model, options=None, bug_compat=None):
        super().__init__(model, options, bug_compat)
        self.loss_fn = ClipLoss()

    def encode(self, batch):
        return self.encode_pair(batch["main"], "main")

    def compute_losses(self, feats, batch):
        return combine_losses({"contrastive": (1.0, self.loss_fn(feats["main_image"], feats["main_text"],
                                                                 self.model.scale()))})
