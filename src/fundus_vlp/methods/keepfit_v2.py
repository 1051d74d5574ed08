"""KeepFIT V2 stage 1: hybrid knowledge injection (what is known and what is inferred:
docs/reference.md#keepfit-v2-known, docs/reference.md#keepfit-v2-inferred).

Global semantics (contrastive): label-aware loss on the public batch + InfoNCE on the elite pairs
(+ the optional v1 revision term). Local appearance (generative): an image-conditioned caption decoder
that cross-attends to the image tower's grid/patch tokens of the elite images, trained with
teacher-forced token cross-entropy. All terms come from one forward, so every parameter gets a
gradient every step (no ``find_unused_parameters``).
L = L_pub + λ_e L_elite + λ_gen L_gen (+ λ_rev L_rev).
Stage 0 (MLM text pretraining) is ``fundus_vlp.train.text_pretrain``; its output folder is used as the
text tower (``model.text.hf_model_name=<dir>``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..data.config import DataNeeds
from ..losses.caption import target_positions, token_cross_entropy
from ..runtime.distributed import all_reduce_sum
from .base import combine_losses, register_method
from .elite import EliteKnowledge, RevisionCfg
from .flair import FLAIRMethod


@dataclass
class KeepFITV2Cfg:
    lambda_elite: float = 1.0  # InfoNCE on the elite pairs
    lambda_gen: float = 1.0  # caption generation on the elite pairs
    label_smoothing: float = 0.0  # of the caption token cross-entropy
    revision: RevisionCfg = field(default_factory=lambda: RevisionCfg(enabled=False))  # the optional v1 term


@register_method
class KeepFITV2Method(EliteKnowledge, FLAIRMethod):
    name = "keepfit_v2"
    options_class = KeepFITV2Cfg
    needs_decoder = True
    data = DataNeeds(elite=True)

    def __init__(self, model, options=None, bug_compat=None):
        if model.decoder is None:
            raise ValueError("keepfit_v2 needs a caption decoder: set model.decoder.enabled=true")
        super().__init__(model, options, bug_compat)
        self.init_elite_knowledge(self.options.revision)

    def encode(self, batch):
        main, elite = batch["main"], batch["elite"]
        feats = self.encode_pair(main, "main")
        # one trunk pass gives both the global embedding (contrastive) and the grid tokens (generative)
        feats["elite_image"], feats["elite_tokens"] = self.model.encode_image_with_tokens(elite["images"])
        feats["elite_text"] = self.model.encode_text(elite["text"])
        return feats

    def compute_losses(self, feats, batch):
        v2 = self.options
        pub = self.public_contrastive(feats, batch)
        elite = self.elite_term(feats)
        tokens = batch["elite"]["caption_ids"]
        decoder = self.model.decoder
        scored = target_positions(tokens, decoder.pad_id)  # teacher forcing: position t predicts token t+1
        logits = decoder.scored_logits(feats["elite_tokens"], tokens, scored)
        gen = token_cross_entropy(logits, tokens[:, 1:][scored], v2.label_smoothing,
                                  global_token_count=all_reduce_sum(scored.sum()))
        terms = {"public": (1.0, pub), "elite": (v2.lambda_elite, elite), "caption": (v2.lambda_gen, gen)}
        self.add_revision_term(terms, feats)
        return combine_losses(terms)

    def loss_side_modules(self):
        return [self.model.decoder] + super().loss_side_modules()
