"""Training a segmenter for thin and rare structures, and choosing its epoch without ever keeping a trivial one.

Loss (``segmentation.loss``):

* ``dice_ce`` (default): class-weighted cross-entropy + soft Dice over the **foreground** classes only
  (multi-label: binary cross-entropy with a per-label positive weight + soft Dice per label). The weights
  come from the training masks (``1/sqrt(frequency)``, normalised): a 10 % vessel class weighs ~3x the
  background, which keeps the first epochs from collapsing onto "everything background";
* ``dice_focal``: the focal term (gamma 2) in place of the weighted cross-entropy.

Schedule: AdamW, a linear warm-up over ``warmup_epochs`` then cosine decay to zero at ``epochs``. An epoch
is at least ``min_steps_per_epoch`` optimiser steps (small sets are repeated, reshuffled, within an epoch),
so a 20-image set gets as many updates between validations as a large one needs.

Selection (``fit.fit_select``): after every epoch the validation split is predicted; the history records the
loss, learning rate, validation Dice per class, the predicted foreground fraction per class and ``trivial``
(the prediction is one constant mask: every pixel the same class, or for multi-label every label all on or
all off). A trivial epoch is never selected while a non-trivial one exists; patience counts epochs without
a new selection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import SEG_LOSSES, SegmentationCfg
from .finetune import set_train_mode
from .fit import STOP_COMPLETED, STOP_PATIENCE, fit_select
from ..runtime.extras import require
from .segmentation import build_segmenter, configure_encoder, encoder_timm, load_encoder_init
from .segmentation_metrics import class_fractions, label_counts, metrics_from_counts, pixel_aupr, unpack_labels


@dataclass
class SegTask:
    """What the masks mean: ``multilabel`` masks carry bit ``k`` for class ``k`` (classes may overlap);
    otherwise each pixel holds one class index."""

    classes: Sequence[str]
    multilabel: bool = False

    @property
    def n(self) -> int:
        return len(self.classes)

    def targets(self, masks: torch.Tensor) -> torch.Tensor:
        """Loss targets: (B, S, S) long class indices, or (B, K, S, S) float 0/1 for multi-label."""
        return unpack_labels(masks, self.n).float() if self.multilabel else masks.long()

    def decide(self, logits: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Masks in the stored encoding (uint8) and, multi-label, the per-label probabilities (float16)."""
        if not self.multilabel:
            return logits.argmax(1).to(torch.uint8), None
        probs = logits.float().sigmoid()
        bits = (1 << torch.arange(self.n, device=logits.device)).view(1, -1, 1, 1)
        return ((probs > 0.5).long() * bits).sum(1).to(torch.uint8), probs.half()


class _Normalise(nn.Module):
    def __init__(self, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean or [0.0, 0.0, 0.0]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or [1.0, 1.0, 1.0]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return (images_u8.float() / 255.0 - self.mean) / self.std


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


def take(array, idx) -> torch.Tensor:
    """Rows ``idx`` of an in-memory or memory-mapped uint8 array as a tensor (reads only those rows)."""
    idx = np.asarray(idx)
    if isinstance(array, torch.Tensor):
        return array[torch.from_numpy(idx)]
    return torch.from_numpy(np.ascontiguousarray(array[idx]))


@torch.no_grad()
def predict_masks(seg: nn.Module, norm: _Normalise, images, idx, task: SegTask, batch_size: int, device,
                  with_probs: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Masks (N, S, S) uint8 in the stored encoding for the images ``idx`` (and multi-label probabilities)."""
    seg.eval()
    masks, probs = [], []
    for s in _batches(len(idx), batch_size):
        m, p = task.decide(seg(norm(take(images, idx[s]).to(device))))
        masks.append(m.cpu())
        if with_probs and p is not None:
            probs.append(p.cpu())
    size = tuple(images.shape[2:])
    out = torch.cat(masks) if masks else torch.empty((0,) + size, dtype=torch.uint8)
    return out, (torch.cat(probs) if probs else None)


def score(pred: torch.Tensor, target: torch.Tensor, task: SegTask, probs: Optional[torch.Tensor] = None
          ) -> Dict[str, float]:
    """Dice/IoU per class (and per-label pixel AUPR when multi-label probabilities are given)."""
    out = metrics_from_counts(label_counts(pred, target, task.n, task.multilabel), task.classes)
    if probs is not None:
        out.update(pixel_aupr(probs, target, task.classes))
    return out


def is_trivial(pred: torch.Tensor, task: SegTask) -> bool:
    """One constant mask: a single class everywhere (multi-class), or every label all on / all off."""
    if not task.multilabel:
        return bool((pred == pred.reshape(-1)[0]).all()) if pred.numel() else True
    return bool(all(f in (0.0, 1.0) for f in class_fractions(pred, task.n, True)))


def constant_baselines(target: torch.Tensor, task: SegTask) -> Dict[str, float]:
    """Mean Dice of every constant prediction (each class everywhere; multi-label: nothing, everything) on
    ``target``: the values a trained model must beat."""
    if task.multilabel:
        consts = {"nothing": 0, "every_label_everywhere": (1 << task.n) - 1}
    else:
        consts = {f"all_{c}": k for k, c in enumerate(task.classes)}
    return {name: score(torch.full_like(target, v), target, task)["dice_mean"] for name, v in consts.items()}


# -- loss ----------------------------------------------------------------------------------------------

def class_weights(masks, idx, task: SegTask, max_weight: float = 50.0) -> torch.Tensor:
    """Multi-class: per-class ``1/sqrt(frequency)`` weights with mean 1 (absent classes get the largest);
    multi-label: per-label positive weights ``sqrt(negatives/positives)``, capped at ``max_weight``."""
    freq = np.zeros(task.n)
    for s in _batches(len(idx), 64):
        part = idx[s]
        freq += np.asarray(class_fractions(take(masks, part), task.n, task.multilabel)) * len(part)
    freq /= max(len(idx), 1)
    if task.multilabel:
        pos = np.clip(freq, 1e-8, 1.0)
        return torch.tensor(np.minimum(np.sqrt((1 - pos) / pos), max_weight), dtype=torch.float32)
    w = 1.0 / np.sqrt(np.clip(freq, 1e-8, None))
    w = np.minimum(w, w[freq > 0].max() if (freq > 0).any() else 1.0)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def build_loss(cfg: SegmentationCfg, task: SegTask, weights: torch.Tensor, foreground: Sequence[int]
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    smp = require("segmentation_models_pytorch", "seg", "segmentation evaluation")

    if cfg.loss not in SEG_LOSSES:
        raise ValueError(f"segmentation.loss must be one of {SEG_LOSSES}, got {cfg.loss!r}")
    mode = "multilabel" if task.multilabel else "multiclass"
    dice = smp.losses.DiceLoss(mode=mode, classes=None if task.multilabel else list(foreground), from_logits=True)
    focal = smp.losses.FocalLoss(mode=mode, gamma=2.0) if cfg.loss == "dice_focal" else None

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = weights.to(logits.device)
        if focal is not None:
            pixel = focal(logits, target)
        elif task.multilabel:
            pixel = F.binary_cross_entropy_with_logits(logits, target, pos_weight=w.view(1, -1, 1, 1))
        else:
            pixel = F.cross_entropy(logits, target, weight=w)
        return pixel + dice(logits, target)

    return loss


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear from 1/warmup to 1, then cosine to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    return factor


# -- the loop ------------------------------------------------------------------------------------------

def _epoch_order(train_idx: np.ndarray, n_samples: int, gen: torch.Generator) -> np.ndarray:
    """``n_samples`` training indices: whole reshuffled passes over the set, as many as needed."""
    reps = -(-n_samples // len(train_idx))
    return np.concatenate([train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
                           for _ in range(reps)])[:max(n_samples, len(train_idx))]


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Seeded horizontal and vertical flips (left and right eyes mirror each other; vessels have no up)."""
    for dim_x, dim_y in ((-1, -1), (-2, -2)):
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(dim_x), x)
        y = torch.where(flip.view(-1, *[1] * (y.dim() - 1)), y.flip(dim_y), y)
    return x, y


def train_segmenter(model, images, masks, train_idx: np.ndarray, val_idx: np.ndarray, task: SegTask,
                    cfg: SegmentationCfg, init: str, seed: int, device, progress: bool = True
                    ) -> Tuple[nn.Module, _Normalise, Dict]:
    """Train on ``train_idx``, keep the best non-trivial epoch on validation mean Dice.

    ``images`` (N, 3, S, S) and ``masks`` (N, S, S) are uint8 arrays, in memory or memory-mapped. Test data
    is not an argument: the caller predicts the test split once with the returned model.
    """
    if len(val_idx) == 0:
        raise ValueError("segmentation needs a validation split for model selection")
    if len(train_idx) == 0:
        raise ValueError("segmentation needs training images")
    torch.manual_seed(seed)
    seg = build_segmenter(model.cfg.vision, task.n, cfg.architecture, images.shape[-1], cfg.decoder_channels)
    transfer = load_encoder_init(seg, model, init, cfg.imagenet_checkpoint)
    n_trainable = configure_encoder(seg, cfg.finetune, model.visual.trunk)
    pre = model.cfg.preprocess
    norm = _Normalise(pre.mean, pre.std).to(device)
    seg.to(device)
    enc_ids = {id(p) for p in encoder_timm(seg).parameters()}
    enc_params = [p for p in encoder_timm(seg).parameters() if p.requires_grad]
    other = [p for p in seg.parameters() if p.requires_grad and id(p) not in enc_ids]
    groups = [{"params": other, "lr": cfg.lr}] + ([{"params": enc_params, "lr": cfg.encoder_lr}] if enc_params else [])
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps = max(-(-len(train_idx) // cfg.batch_size), cfg.min_steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup_epochs * steps, cfg.epochs * steps))
    weights = class_weights(masks, train_idx, task)
    fg = [k for k in range(task.n) if task.multilabel or not (k == 0 and task.classes[0].lower() == "background")]
    loss_fn = build_loss(cfg, task, weights, fg)
    gen = torch.Generator().manual_seed(seed)
    y_val = take(masks, val_idx)

    def train_epoch(epoch: int) -> Dict[str, float]:
        set_train_mode(seg, cfg.finetune)  # fully frozen parts run in eval mode: BN statistics fixed
        order = _epoch_order(train_idx, steps * cfg.batch_size, gen)
        total, seen = 0.0, 0
        for s in _batches(len(order), cfg.batch_size):
            x, y = take(images, order[s]), take(masks, order[s])
            if cfg.augment:
                x, y = _augment(x, y, gen)
            loss = loss_fn(seg(norm(x.to(device))), task.targets(y.to(device)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + loss.item() * len(x), seen + len(x)
        return {"train_loss": total / max(seen, 1), "lr": opt.param_groups[0]["lr"]}

    def validate(epoch: int) -> Dict[str, object]:
        pred, _ = predict_masks(seg, norm, images, val_idx, task, cfg.batch_size, device)
        val = score(pred, y_val, task)
        fractions = class_fractions(pred, task.n, task.multilabel)
        return {**{f"val_{k}": v for k, v in val.items() if k.startswith("dice_")},
                **{f"val_fraction_{c}": f for c, f in zip(task.classes, fractions)}, "trivial": is_trivial(pred, task)}

    fit = fit_select(train_epoch, validate, modules=seg, metric="val_dice_mean", epochs=cfg.epochs,
                     patience=cfg.patience, desc=f"segmentation ({init}, {cfg.finetune})", progress=progress)
    stopped = {STOP_PATIENCE: f"no better validation Dice for {cfg.patience} epochs (patience)",
               STOP_COMPLETED: f"epoch budget ({cfg.epochs}) reached"}.get(fit.stop_reason, fit.stop_reason)
    return seg, norm, {"best_epoch": fit.best_epoch, "best_val_dice_mean": fit.best_value,
                       "selected_trivial": fit.best_trivial, "stopped": stopped, "history": fit.history,
                       "class_weights": [round(float(w), 4) for w in weights],
                       "trainable_encoder_tensors": n_trainable,
                       "transfer": {k: v for k, v in transfer.items() if k != "skipped_classifier"}}
