"""Fine-tuning the image tower with a linear head (docs/reference.md#evaluation-fine-tuning), modes that work.

Modes (the official ``freeze_weights`` never matches the architecture name, so every official variant
trains the whole network):

* ``ft``: all image-tower parameters and the head are trained;
* ``lp_ft``: as ``ft``, the head initialised from a linear probe fitted on the train split (C on val);
* ``last_block``: only the last stage/block of the trunk (timm ``feature_info[-1]``), whatever follows
  it, the projection and the head are trained; frozen parts run in eval mode (BN statistics fixed);
* ``frozen_bn``: everything is trained except BatchNorm layers, which stay in eval mode with frozen
  affine parameters.

Model selection and early stopping use validation macro-F1 (patience, ``fit_select``; an epoch that predicts
one class for every validation image is selected only if every epoch does); the test split is predicted once,
with the selected weights, at the very end.
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader

from ..data.transforms import build_transform
from ..models.vision import last_stage_name
from .config import FinetuneCfg
from ..runtime.device import resolve_device
from ..inference.inputs import ImageFiles, decode, eval_loader
from .fit import fit_select

FINETUNE_MODES = ("ft", "lp_ft", "last_block", "frozen_bn")


class ImageClassifier(nn.Module):
    """Image tower + ``Linear`` head on its (projected, unit-norm or raw pooled) features."""

    def __init__(self, visual: nn.Module, n_classes: int, project: bool = True, embed_dim: Optional[int] = None,
                 head: Optional[nn.Linear] = None):
        super().__init__()
        self.visual, self.project = visual, project
        dim = embed_dim if project else visual.width
        self.head = head if head is not None else nn.Linear(dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(images, project=self.project, normalize=True))


class AugmentedImages(ImageFiles):
    """Training images with seeded per-(seed, epoch, index) augmentation (reproducible across runs)."""

    def __init__(self, paths: Sequence, labels: np.ndarray, transform, seed: int, where=None):
        super().__init__(paths, transform, where)
        self.labels, self.seed, self.epoch = labels, seed, 0

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image = decode(self.paths[i], self.transform, where=self.where[i])
        return self.transform(image, rng=rng), int(self.labels[i])


def configure_trainable(clf: ImageClassifier, mode: str) -> None:
    """Set ``requires_grad`` for a fine-tuning mode."""
    if mode not in FINETUNE_MODES:
        raise ValueError(f"fine-tune mode must be one of {FINETUNE_MODES}, got {mode!r}")
    for p in clf.parameters():
        p.requires_grad_(True)
    if mode == "last_block":
        trunk = clf.visual.trunk
        prefix = last_stage_name(trunk)
        names = [n for n, _ in trunk.named_parameters()]
        first = next((i for i, n in enumerate(names) if n == prefix or n.startswith(prefix + ".")), None)
        if first is None:
            raise ValueError(f"cannot find the last block {prefix!r} in {type(trunk).__name__}")
        for i, (n, p) in enumerate(trunk.named_parameters()):
            p.requires_grad_(i >= first)
    elif mode == "frozen_bn":
        for m in clf.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.requires_grad_(False)


def set_train_mode(clf: ImageClassifier, mode: str) -> None:
    """train(), then eval() for every fully frozen sub-module (fixed BN statistics, no dropout there) and, in
    ``frozen_bn`` mode, for every BatchNorm layer."""
    clf.train()
    for m in clf.modules():
        params = list(m.parameters())
        frozen = bool(params) and not any(p.requires_grad for p in params)
        if frozen or (mode == "frozen_bn" and isinstance(m, nn.modules.batchnorm._BatchNorm)):
            m.eval()


@torch.no_grad()
def predict(clf: nn.Module, paths, where, preprocess, batch_size: int, device, num_workers: int = 0) -> np.ndarray:
    clf.eval()
    loader = eval_loader(preprocess, paths, where, batch_size, num_workers)
    return torch.cat([clf(x.to(device)).float().softmax(-1).cpu() for x in loader]).numpy()


def finetune(model, paths: Sequence, where: Sequence[str], labels: np.ndarray, train_idx: np.ndarray,
             val_idx: np.ndarray, n_classes: int, cfg: FinetuneCfg, seed: int = 0, num_workers: int = 0,
             device: str = "cpu", init_head: Optional[nn.Linear] = None, progress: bool = True):
    """Train on ``train_idx``, select on ``val_idx``; returns the selected classifier and its history
    (with ``val_probs``, the selected weights' validation probabilities; None when no epoch ran).

    Test data is not an argument: the caller predicts the test split once with the returned model.
    """
    if len(val_idx) == 0:
        raise ValueError("fine-tuning needs a validation split for model selection")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    clf = ImageClassifier(copy.deepcopy(model.visual), n_classes, cfg.project_features, model.cfg.embed_dim,
                          head=copy.deepcopy(init_head) if init_head is not None else None).to(dev)
    configure_trainable(clf, cfg.mode)
    pre = model.cfg.preprocess
    paths, where = list(paths), list(where)
    y_train = labels[train_idx]
    data = AugmentedImages([paths[i] for i in train_idx], y_train, build_transform(pre, train=cfg.augment),
                           seed, [where[i] for i in train_idx])
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                        num_workers=num_workers)
    weight = None
    if cfg.class_weighted:
        counts = np.bincount(y_train, minlength=n_classes).astype(float)
        weight = torch.as_tensor(np.where(counts > 0, len(y_train) / (n_classes * np.maximum(counts, 1)), 0.0),
                                 dtype=torch.float32, device=dev)
    params = [p for p in clf.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)
    val_paths, val_where, y_val = [paths[i] for i in val_idx], [where[i] for i in val_idx], labels[val_idx]

    def train_epoch(epoch: int) -> dict:
        data.epoch = epoch
        set_train_mode(clf, cfg.mode)
        total, n = 0.0, 0
        for images, targets in loader:
            images, targets = images.to(dev), targets.to(dev)
            loss = F.cross_entropy(clf(images), targets, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            total, n = total + loss.item() * len(targets), n + len(targets)
        return {"train_loss": total / max(n, 1)}

    def validate(epoch: int) -> dict:
        probs = predict(clf, val_paths, val_where, pre, cfg.batch_size, dev, num_workers)
        pred = probs.argmax(1)
        f1 = float(f1_score(y_val, pred, labels=np.arange(n_classes), average="macro", zero_division=0))
        # one class predicted for every image while validation holds several: a constant classifier
        return {"val_f1_macro": f1, "trivial": len(np.unique(pred)) == 1 < len(np.unique(y_val)), "val_probs": probs}

    fit = fit_select(train_epoch, validate, modules=clf, metric="val_f1_macro", mode="max", epochs=cfg.epochs,
                     patience=cfg.patience, desc=f"fine-tune ({cfg.mode})", progress=progress)
    # the selected epoch's validation probabilities, so the caller need not predict validation again
    return clf, {"best_epoch": fit.best_epoch, "best_val_f1_macro": fit.best_value if fit.best else -1.0,
                 "history": fit.history, "stop_reason": fit.stop_reason, "best_trivial": fit.best_trivial,
                 "val_probs": fit.best.get("val_probs")}
