"""What KeepFIT v1 and V2 share: InfoNCE on the elite pairs and the optional revision term, with one
nested revision config (``<method>.revision.*``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..losses import ClipLoss
from ..models.revision import RevisionAttention, revision_loss
from ..runtime.distributed import all_gather_with_grad


@dataclass
class RevisionCfg:
    """Image-similarity-guided text revision: public images attend over the elite images (keys) to mix the
    elite captions (values); the revised text embedding is pulled towards the public text embedding."""

    enabled: bool = True
    weight: float = 100.0  # λ_rev: the official weight; the term itself is small (a cosine gap)
    attn_heads: int = 2
    attn_dropout: float = 0.5


class EliteKnowledge:
    """Mixin of KeepFIT v1 and V2: InfoNCE on the elite pairs and the optional revision term."""

    def init_elite_knowledge(self, revision: RevisionCfg) -> None:
        self.elite_loss = ClipLoss()  # identity targets on elite pairs (the expert-caption branch)
        self.revision = RevisionAttention(
            self.model.cfg.embed_dim, revision.attn_heads, revision.attn_dropout,
            softmax_over_heads=self.bug_compat.softmax_over_heads) if revision.enabled else None

    def elite_term(self, feats):
        return self.elite_loss(feats["elite_image"], feats["elite_text"], self.model.scale())

    def add_revision_term(self, terms, feats) -> None:
        if self.revision is not None:
            terms["revision"] = (self.options.revision.weight, self.revision_term(feats))

    def loss_side_modules(self):
        return super().loss_side_modules() + ([self.revision] if self.revision is not None else [])

    def revision_term(self, feats):
        # Keys/values are the global elite batch, so a multi-rank run equals the single-process one.
        keys = all_gather_with_grad(feats["elite_image"])
        values = all_gather_with_grad(feats["elite_text"])
        revised = self.revision(feats["main_image"], keys, values)
        return revision_loss(feats["main_text"], revised)
