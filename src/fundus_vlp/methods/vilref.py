"""ViLReF: weighted similarity coupling loss with false-negative elimination, momentum encoders and
memory queues of features + labels (a reconstruction, docs/reference.md#vilref-wsc-loss).

Labels are the multi-hot category vectors of the categorical data (all categories of an image, not
only the sampled prompt's). Queues and momentum towers are module buffers/parameters, so they are
saved in and restored from checkpoints with the rest of the task.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.config import DataNeeds
from ..losses import wsc_loss
from ..models.momentum import FeatureQueue, create_momentum_copy, ema_update
from ..runtime.distributed import all_gather_no_grad, get_rank
from .base import Method, register_method


@dataclass
class ViLReFCfg:
    momentum: float = 0.995  # EMA of the momentum towers
    queue_size: int = 4096  # features + multi-hot labels kept from earlier batches
    delta: float = 1.0 - 1e-6  # label similarity at or above which a queued sample is a false negative
    gamma: float = 1.0  # exponent of the label-similarity weights
    w_min: float = 0.0  # floor of the negative weights
    variant: str = "eliminate"  # eliminate | soft_target


@register_method
class ViLReFMethod(Method):
    name = "vilref"
    options_class = ViLReFCfg
    data = DataNeeds(multi_hot=True)

    @classmethod
    def build(cls, model, options=None, bug_compat=None, vocab=None) -> "ViLReFMethod":
        """The queues store multi-hot labels, so the task needs the vocabulary (and its "normal" id)."""
        if vocab is None:
            raise ValueError("vilref needs the label vocabulary")
        normal = vocab.id("normal")
        return cls(model, options, bug_compat, num_labels=len(vocab), normal_index=normal if normal >= 0 else None)

    def __init__(self, model, options=None, bug_compat=None, *, num_labels: int, normal_index: int | None = None):
        super().__init__(model, options, bug_compat)
        v = self.options
        self.momentum_visual = create_momentum_copy(model.visual)
        self.momentum_text = create_momentum_copy(model.text)
        self.queue = FeatureQueue(v.queue_size, model.cfg.embed_dim, num_labels)
        self.normal_index = normal_index
        self._pending = None

    def encode(self, batch):
        main = batch["main"]
        feats = self.encode_pair(main, "main")
        with torch.no_grad():
            # momentum features of this step; the EMA update of the previous step's
            # after_step() is ALBEF's "update, then encode" order.
            feats["main_image_m"] = self.momentum_visual(main["images"])
            feats["main_text_m"] = self.momentum_text(main["text"])
        return feats

    def compute_losses(self, feats, batch):
        v = self.options
        labels = batch["main"]["multi_hot"]
        image_m = all_gather_no_grad(feats["main_image_m"])
        text_m = all_gather_no_grad(feats["main_text_m"])
        labels_g = all_gather_no_grad(labels)
        bank_img, bank_txt, bank_labels, bank_valid = self.queue.candidates(image_m, text_m, labels_g)
        n = labels.shape[0]
        positives = torch.arange(n, device=labels.device) + get_rank() * n
        loss = wsc_loss(feats["main_image"], feats["main_text"], bank_img, bank_txt, labels, bank_labels, bank_valid,
                        self.model.scale(), positives, delta=v.delta, gamma=v.gamma, w_min=v.w_min,
                        variant=v.variant, normal_index=self.normal_index)
        if self.training:
            self._pending = (image_m, text_m, labels_g)
        return {"loss": loss, "wsc": loss.detach(), "queue_fill": self.queue.valid.float().mean()}

    @torch.no_grad()
    def after_step(self):
        super().after_step()
        m = self.options.momentum
        ema_update(self.model.visual, self.momentum_visual, m)
        ema_update(self.model.text, self.momentum_text, m)
        if self._pending is not None:
            self.queue.enqueue(*self._pending)  # the gathered global batch (enqueued after the optimiser step)
            self._pending = None
