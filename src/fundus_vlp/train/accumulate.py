"""Gradient accumulation that keeps every negative of the full batch (a feature cache).

Features of all micro-batches are computed without grad first; then each micro-batch is re-encoded with
grad and spliced into the cache (``Method.forward(..., cache=, slot=)``), so a contrastive loss still sees
the whole batch. Loss-side parameters (logit scale, revision attention, caption decoder) receive the full
gradient once per micro-batch, so theirs is divided by the number of micro-batches at the end.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..methods.base import Batch, Method


def concat_batches(batches: List[Batch], pad_id: Optional[int] = None) -> Batch:
    """Concatenate nested dicts of tensors along dim 0 (micro-batches -> one batch).

    Token ids are padded to each micro-batch's longest text; with ``pad_id`` they are right-padded to the
    longest of all micro-batches first (the caption loss reads the full batch's caption ids). Other tensors
    whose trailing dimensions differ are left out.
    """
    out: Batch = {}
    for key, value in batches[0].items():
        parts = [b[key] for b in batches]
        if isinstance(value, dict):
            out[key] = concat_batches(parts, pad_id)
        elif isinstance(value, Tensor):
            if pad_id is not None and value.dim() == 2 and not value.is_floating_point():
                width = max(p.shape[1] for p in parts)
                parts = [F.pad(p, (0, width - p.shape[1]), value=pad_id) for p in parts]
            if len({p.shape[1:] for p in parts}) == 1:
                out[key] = torch.cat(parts)
    return out


def accumulate_gradients(wrapped: nn.Module, task: Method, micro_batches: List[Batch],
                         backward: Callable[[Tensor], None], amp: Optional[ContextManager] = None,
                         sync: Optional[Callable[[bool], ContextManager]] = None,
                         pad_id: Optional[int] = None) -> Dict[str, Tensor]:
    """Backward of the full batch, one micro-batch at a time, keeping every negative (the module docstring).

    ``wrapped`` is the task or its DDP wrapper; ``sync(last)`` gives the context of a micro-step (DDP
    ``no_sync`` except on the last one). Returns the losses of the last micro-batch.
    """
    amp = amp if amp is not None else contextlib.nullcontext()
    full = concat_batches(micro_batches, pad_id)
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
