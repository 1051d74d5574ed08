"""KeepFIT v1: FLAIR + image-similarity-guided text revision + mixed training on elite pairs
(keepfit.md §2.4–2.6): L = L_pub + λ_MM L_MM + λ_rev L_rev."""
from __future__ import annotations

from ..losses import ClipLoss
from ..models.revision import RevisionAttention, revision_loss
from ..train.distributed import all_gather_with_grad
from .base import combine_losses
from .flair import FLAIRMethod


class EliteKnowledge:
    """Mixin of KeepFIT v1 and V2: InfoNCE on the elite pairs and the optional revision term."""

    def init_elite_knowledge(self, sub_cfg) -> None:
        """``sub_cfg``: the method's section (``revision``, ``attn_heads``, ``attn_dropout``)."""
        self.elite_loss = ClipLoss()  # identity targets on elite pairs (the paper's MM-Retinal branch, §2.5)
        self.revision = RevisionAttention(
            self.model.cfg.embed_dim, sub_cfg.attn_heads, sub_cfg.attn_dropout,
            softmax_over_heads=self.cfg.bug_compat.softmax_over_heads) if sub_cfg.revision else None

    def elite_term(self, feats):
        return self.elite_loss(feats["elite_image"], feats["elite_text"], self.model.scale())

    def add_revision_term(self, terms, feats, weight: float) -> None:
        if self.revision is not None:
            terms["revision"] = (weight, self.revision_term(feats))

    def loss_side_modules(self):
        return super().loss_side_modules() + ([self.revision] if self.revision is not None else [])

    def revision_term(self, feats):
        # keepfit.md §2.4: public images query the elite images (keys) to mix the elite captions (values).
        # Keys/values are the global elite batch, so a multi-rank run equals the single-process one.
        keys = all_gather_with_grad(feats["elite_image"])
        values = all_gather_with_grad(feats["elite_text"])
        revised = self.revision(feats["main_image"], keys, values)
        return revision_loss(feats["main_text"], revised)


class KeepFITMethod(EliteKnowledge, FLAIRMethod):
    name = "keepfit"
    needs_elite = True

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.init_elite_knowledge(cfg.keepfit)

    def encode(self, batch):
        return {**self.encode_pair(batch["main"], "main"), **self.encode_pair(batch["elite"], "elite")}

    def compute_losses(self, feats, batch):
        k = self.cfg.keepfit
        terms = {"public": (1.0, self.public_contrastive(feats, batch))}
        if k.mixed:
            terms["elite"] = (k.lambda_mm, self.elite_term(feats))
        self.add_revision_term(terms, feats, k.lambda_rev)
        return combine_losses(terms)
