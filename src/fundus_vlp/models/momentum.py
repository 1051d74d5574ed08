"""Momentum (EMA) encoders and feature queues for ViLReF's WSC loss (a reconstruction,
docs/reference.md#vilref-momentum-and-queues).

Order of one step (ALBEF): ``ema_update`` → momentum features under ``no_grad`` → loss against
``[batch; queue]`` → backward/step → ``queue.enqueue`` of the all-gathered momentum features and labels.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["create_momentum_copy", "ema_update", "FeatureQueue"]


def create_momentum_copy(online: nn.Module) -> nn.Module:
    """Deep copy of ``online`` with gradients switched off, to be updated by :func:`ema_update`."""
    momentum = copy.deepcopy(online)
    for p in momentum.parameters():
        p.requires_grad_(False)
    return momentum


@torch.no_grad()
def ema_update(online: nn.Module, momentum: nn.Module, m: float) -> None:
    """``θ̄ ← m θ̄ + (1 − m) θ`` for every parameter; buffers (e.g. BatchNorm statistics) are copied.

    Parameters and buffers are matched by name, so both modules must have the same architecture.
    """
    online_params = dict(online.named_parameters())
    pairs = [(p, online_params[name].detach()) for name, p in momentum.named_parameters()]
    if pairs:  # one fused kernel per op over all tensors (as torch optimisers and timm's EMA do), not one per tensor
        ema, src = (list(t) for t in zip(*pairs))
        torch._foreach_mul_(ema, m)
        torch._foreach_add_(ema, src, alpha=1.0 - m)
    online_buffers = dict(online.named_buffers())
    for name, b_momentum in momentum.named_buffers():
        b_momentum.copy_(online_buffers[name])


class FeatureQueue(nn.Module):
    """Ring buffer of momentum image/text features and multi-hot labels, saved in ``state_dict``.

    Buffers: ``image [K, D]``, ``text [K, D]``, ``labels [K, C]`` (float), ``valid [K]`` (bool, slots written at
    least once) and ``ptr`` (long scalar, next slot to write). Batches that cross the end wrap around; ``K`` need
    not be a multiple of the batch, but a multiple of the global batch (as ALBEF requires) keeps every
    batch contiguous and every slot equally stale.
    """

    image: Tensor
    text: Tensor
    labels: Tensor
    valid: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int, num_labels: int):
        super().__init__()
        if size < 0:
            raise ValueError("queue size must be >= 0")
        self.size = size
        self.register_buffer("image", torch.zeros(size, dim))
        self.register_buffer("text", torch.zeros(size, dim))
        self.register_buffer("labels", torch.zeros(size, num_labels))
        self.register_buffer("valid", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, image: Tensor, text: Tensor, labels: Tensor) -> None:
        """Write a batch at ``ptr`` (modulo ``K``) and advance ``ptr``.

        In DDP pass the all-gathered global batch (``all_gather_no_grad``) so every rank holds the same queue.
        A batch larger than ``K`` keeps only its last ``K`` rows.
        """
        if self.size == 0:
            return
        batch = image.shape[0]
        if batch > self.size:
            image, text, labels = image[-self.size :], text[-self.size :], labels[-self.size :]
            self.ptr.add_(batch - self.size).remainder_(self.size)
            batch = self.size
        slots = (self.ptr + torch.arange(batch, device=self.ptr.device)) % self.size
        self.image[slots] = image.detach().to(self.image.dtype)
        self.text[slots] = text.detach().to(self.text.dtype)
        self.labels[slots] = labels.detach().to(self.labels.dtype)
        self.valid[slots] = True
        self.ptr.add_(batch).remainder_(self.size)

    def candidates(self, image: Tensor, text: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Banks ``[batch; queue]``: image ``[B+K, D]``, text ``[B+K, D]``, labels ``[B+K, C]``, valid ``[B+K]``."""
        batch_valid = torch.ones(image.shape[0], dtype=torch.bool, device=self.valid.device)
        return (
            torch.cat([image, self.image.to(image.dtype)]),
            torch.cat([text, self.text.to(text.dtype)]),
            torch.cat([labels.to(self.labels.dtype), self.labels]),
            torch.cat([batch_valid, self.valid]),
        )
