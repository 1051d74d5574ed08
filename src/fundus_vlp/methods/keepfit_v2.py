"""KeepFIT V2 stage 1: hybrid knowledge injection (keepfit.md §4.1 confirmed; §4.3 design [INFER]).

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

from ..losses import ClipLoss
from ..losses.caption import target_positions, token_cross_entropy
from ..train.distributed import all_reduce_sum
from .base import combine_losses
from .flair import FLAIRMethod
from .keepfit import Revision


class KeepFITV2Method(Revision, FLAIRMethod):
    name = "keepfit_v2"
    needs_elite = True

    def __init__(self, model, cfg):
        if model.decoder is None:
            raise ValueError("keepfit_v2 needs a caption decoder: set model.decoder.enabled=true")
        super().__init__(model, cfg)
        v2 = cfg.keepfit_v2
        self.elite_loss = ClipLoss()
        self.revision = self.build_revision(v2.attn_heads, v2.attn_dropout, cfg.bug_compat) if v2.revision else None

    def encode(self, batch):
        main, elite = batch["main"], batch["elite"]
        feats = self.encode_pair(main, "main")
        # one trunk pass gives both the global embedding (contrastive) and the grid tokens (generative)
        feats["elite_image"], feats["elite_tokens"] = self.model.encode_image_with_tokens(elite["images"])
        feats["elite_text"] = self.model.encode_text(elite["text"])
        return feats

    def compute_losses(self, feats, batch):
        v2 = self.cfg.keepfit_v2
        pub = self.public_contrastive(feats, batch)
        elite = self.elite_loss(feats["elite_image"], feats["elite_text"], self.model.scale())
        tokens = batch["elite"]["caption_ids"]
        decoder = self.model.decoder
        scored = target_positions(tokens, decoder.pad_id)  # teacher forcing: position t predicts token t+1
        logits = decoder.scored_logits(feats["elite_tokens"], tokens, scored)
        gen = token_cross_entropy(logits, tokens[:, 1:][scored], v2.label_smoothing,
                                  global_token_count=all_reduce_sum(scored.sum()))
        terms = {"public": (1.0, pub), "elite": (v2.lambda_elite, elite), "caption": (v2.lambda_gen, gen)}
        if self.revision is not None:
            terms["revision"] = (v2.lambda_rev, self.revision_term(feats))
        return combine_losses(terms)

    def loss_side_modules(self):
        return [self.model.decoder] + ([self.revision] if self.revision is not None else [])
