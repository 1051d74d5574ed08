"""Optimiser and schedule (no decay on norms/biases/logit scale; cosine to the real last step)."""
from __future__ import annotations

import math
from typing import List

import torch
from torch import nn

from .config import OptimCfg


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """open_clip ``exclude_from_wd``: 1-d tensors (norms, biases), the logit scale, position/token embeddings."""
    lowered = name.lower()
    return (param.ndim < 2 or "logit_scale" in lowered or "bias" in lowered or "norm" in lowered
            or "position_embedding" in lowered or "pos_embed" in lowered or "cls_token" in lowered)


def param_groups(module: nn.Module, weight_decay: float) -> List[dict]:
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if _no_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(module: nn.Module, cfg: OptimCfg) -> torch.optim.Optimizer:
    groups = [g for g in param_groups(module, cfg.weight_decay) if g["params"]]
    if not groups:
        raise ValueError("no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             **_implementation(groups))


def _implementation(groups: List[dict]) -> dict:
    """The fused AdamW kernel where torch has one for every parameter's device: one pass over all tensors
    instead of a Python loop of small ops per tensor (on CPU torch's default is that loop)."""
    params = [p for g in groups for p in g["params"]]
    if all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
           for p in params):
        return {"fused": True}
    return {"foreach": True}


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Linear warm-up from lr/warmup to lr, then cosine down to min_lr exactly at `total_steps`.

    Fixes the official schedule, whose horizon is a hard-coded 100 epochs (docs/reference.md#flair-pretraining).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimCfg, steps_per_epoch: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    if cfg.schedule not in ("cosine", "constant"):
        raise ValueError(f"optim.schedule must be cosine or constant, got {cfg.schedule!r}")
    warmup = cfg.warmup_steps if cfg.warmup_steps >= 0 else int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(0, total_steps - 1))
    min_ratio = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total_steps, cfg.schedule, min_ratio))
