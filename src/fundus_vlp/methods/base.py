"""Training task base class: a method = the shared model + the losses and modules of one recipe.

Like open_clip's ``TrainingTask``, the whole task is what DDP and ``torch.compile`` wrap, so the loop
does not know which objective runs. Every method splits its step into

* ``encode(batch)``: the towers' features of one (micro-)batch, and
* ``compute_losses(features, batch)``: the losses from features of the whole batch,

which lets gradient accumulation keep the negatives of the full batch (a feature cache, open_clip
``--accum-freq``): features of all micro-batches are computed without grad, then each micro-batch is
re-encoded with grad and spliced into the cache. Parameters used only inside ``compute_losses``
(``loss_side_parameters``: logit scale, revision attention, caption decoder) then receive the full
gradient once per micro-batch; the loop divides theirs by the number of micro-batches.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..models.clip import FundusCLIP

Features = Dict[str, Tensor]
Batch = Dict[str, Any]


def concat_batches(batches: List[Batch]) -> Batch:
    """Concatenate nested dicts of tensors along dim 0 (micro-batches -> one batch).

    Tensors whose other dimensions differ between micro-batches (tower token ids padded to each
    micro-batch's longest text) are left out: only ``encode`` reads them, per micro-batch.
    """
    out: Batch = {}
    for key, value in batches[0].items():
        if isinstance(value, dict):
            out[key] = concat_batches([b[key] for b in batches])
        elif isinstance(value, Tensor) and all(b[key].shape[1:] == value.shape[1:] for b in batches):
            out[key] = torch.cat([b[key] for b in batches])
    return out


def splice_features(cache: List[Features], live: Features, slot: int) -> Features:
    """The cached features of every micro-batch, with micro-batch `slot` replaced by live (grad) ones."""
    return {k: torch.cat([c[k] for c in cache[:slot]] + [live[k]] + [c[k] for c in cache[slot + 1:]])
            for k in live}


def accumulate_gradients(wrapped: nn.Module, task: "Method", micro_batches: List[Batch],
                         backward: Callable[[Tensor], None], amp: Optional[ContextManager] = None,
                         sync: Optional[Callable[[bool], ContextManager]] = None) -> Dict[str, Tensor]:
    """Backward of the full batch, one micro-batch at a time, keeping every negative (the module docstring).

    ``wrapped`` is the task or its DDP wrapper; ``sync(last)`` gives the context of a micro-step (DDP
    ``no_sync`` except on the last one). Returns the losses of the last micro-batch.
    """
    amp = amp if amp is not None else contextlib.nullcontext()
    full = concat_batches(micro_batches)
    with torch.no_grad(), amp:
        cache = [wrapped(mb, encode_only=True) for mb in micro_batches]
    for j, mb in enumerate(micro_batches):
        with sync(j == len(micro_batches) - 1) if sync is not None else contextlib.nullcontext():
            with amp:
                losses = wrapped(mb, cache=cache, slot=j, full_batch=full)
            backward(losses["loss"])
    for p in task.loss_side_parameters():  # each micro-step gave them the full-batch gradient
        if p.grad is not None:
            p.grad.div_(len(micro_batches))
    return losses


def combine_losses(terms: Dict[str, Tuple[float, Tensor]]) -> Dict[str, Tensor]:
    """``{"loss": Σ weight·term, name: term}`` — parts are logged unweighted and detached."""
    total = sum(weight * value for weight, value in terms.values())
    return {"loss": total, **{name: value.detach() for name, (_, value) in terms.items()}}


class Method(nn.Module):
    name = "base"
    needs_elite = False  # draw an elite batch alongside every main batch
    pool_elite = False  # add elite pairs to the main stream instead
    augment_description = True  # expert-knowledge prompt augmentation of categorical samples
    needs_multi_hot = False  # batches carry the multi-hot label vector (ViLReF)

    @classmethod
    def data_needs(cls, cfg) -> Dict[str, bool]:
        """What the data pipeline must provide; decided before the method is built (ViLReF needs the vocab)."""
        return {"needs_elite": cls.needs_elite, "pool_elite": cls.pool_elite,
                "augment_description": cls.augment_description, "needs_multi_hot": cls.needs_multi_hot}

    @classmethod
    def build(cls, model: FundusCLIP, cfg, vocab=None) -> "Method":
        """The task for a run; methods that need more than the model and config (the vocabulary) override it."""
        return cls(model, cfg)

    def __init__(self, model: FundusCLIP, cfg):
        super().__init__()
        self.model = model
        self.cfg = cfg

    # -- to implement ---------------------------------------------------------------------------
    def encode(self, batch: Batch) -> Features:
        raise NotImplementedError

    def compute_losses(self, feats: Features, batch: Batch) -> Dict[str, Tensor]:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------------
    def forward(self, batch: Batch, cache: Optional[List[Features]] = None, slot: int = 0,
                full_batch: Optional[Batch] = None, encode_only: bool = False) -> Dict[str, Tensor]:
        feats = self.encode(batch)
        if encode_only:
            return feats
        if cache is not None:
            feats = splice_features(cache, feats, slot)
            batch = full_batch
        return self.compute_losses(feats, batch)

    def loss_side_modules(self) -> List[nn.Module]:
        """Modules used only inside ``compute_losses`` (revision attention, caption decoder)."""
        return []

    def loss_side_parameters(self) -> List[nn.Parameter]:
        return [self.model.logit_scale] + [p for m in self.loss_side_modules() for p in m.parameters()]

    @torch.no_grad()
    def after_step(self) -> None:
        """Called once after every optimiser step."""
        self.model.clamp_logit_scale()

    def encode_pair(self, sub: Batch, prefix: str) -> Features:
        return {f"{prefix}_image": self.model.encode_image(sub["images"]),
                f"{prefix}_text": self.model.encode_text(sub["text"])}
