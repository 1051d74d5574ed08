"""KeepFIT v1: FLAIR + image-similarity-guided text revision + mixed training on elite pairs:
L = L_pub + λ_MM L_MM + λ_rev L_rev."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..data.config import DataNeeds
from .base import combine_losses, register_method
from .elite import EliteKnowledge, RevisionCfg
from .flair import FLAIRMethod


@dataclass
class KeepFITCfg:
    lambda_mm: float = 1.0  # weight of the InfoNCE term on the elite pairs ("mixed training")
    mixed: bool = True
    revision: RevisionCfg = field(default_factory=RevisionCfg)


@register_method
class KeepFITMethod(EliteKnowledge, FLAIRMethod):
    name = "keepfit"
    options_class = KeepFITCfg
    data = DataNeeds(elite=True)

    def __init__(self, model, options=None, bug_compat=None):
        super().__init__(model, options, bug_compat)
        self.init_elite_knowledge(self.options.revision)

    def encode(self, batch):
        return {**self.encode_pair(batch["main"], "main"), **self.encode_pair(batch["elite"], "elite")}

    def compute_losses(self, feats, batch):
        k = self.options
        terms = {"public": (1.0, self.public_contrastive(feats, batch))}
        if k.mixed:
            terms["elite"] = (k.lambda_mm, self.elite_term(feats))
        self.add_revision_term(terms, feats)
        return combine_losses(terms)
