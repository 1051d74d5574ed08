"""KeepFIT v1: FLAIR + image-similarity-guided text revision + mixed training on elite pairs
(keepfit.md §2.4–2.6): L = L_pub + λ_MM L_MM + λ_rev L_rev."""
from __future__ import annotations

from ..losses import ClipLoss
from ..models.revision import RevisionAttention, revision_loss
from ..train.distributed import all_gather_with_grad
from .base import combine_losses
from .flair import FLAIRMethod


class Revision:
    """Mixin: the revision term shared by KeepFIT v1 and (optionally) KeepFIT V2."""

    def build_revision(self, heads: int, dropout: float, bug_compat) -> RevisionAttention:
        return RevisionAttention(self.model.cfg.embed_dim, heads, dropout,
                                 softmax_over_heads=bug_compat.softmax_over_heads)

    def revision_term(self, feats):
        # keepfit.md §2.4: public images query the elite images (keys) to mix the elite captions (values).
        # Keys/values are the global elite batch, so a multi-rank run equals the single-process one.
        keys = all_gather_with_grad(feats["elite_image"])
        values = all_gather_with_grad(feats["elite_text"])
        revised = self.revision(feats["main_image"], keys, values)
        return revision_loss(feats["main_text"], revised)


class KeepFITMethod(Revision, FLAIRMethod):
    name = "keepfit"
    needs_elite = True

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        k = cfg.keepfit
        self.elite_loss = ClipLoss()  # identity targets on elite pairs (the paper's MM-Retinal branch, §2.5)
        self.revision = self.build_revision(k.attn_heads, k.attn_dropout, cfg.bug_compat) if k.revision else None

    def encode(self, batch):
        return {**self.encode_pair(batch["main"], "main"), **self.encode_pair(batch["elite"], "elite")}

    def compute_losses(self, feats, batch):
        k = self.cfg.keepfit
        terms = {"public": (1.0, self.public_contrastive(feats, batch))}
        if k.mixed:
            mm = self.elite_loss(feats["elite_image"], feats["elite_text"], self.model.scale())
            terms["elite"] = (k.lambda_mm, mm)
        if self.revision is not None:
            terms["revision"] = (k.lambda_rev, self.revision_term(feats))
        return combine_losses(terms)

    def loss_side_modules(self):
        return [self.revision] if self.revision is not None else []
