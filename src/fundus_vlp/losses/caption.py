"""Teacher-forced caption (report generation) loss: shifted token cross-entropy, pad positions ignored.

The KeepFIT-FFA captioner's masked-mean NLL, used as ℒ_gen of KeepFIT V2 (docs/reference.md#keepfit-ffa-captioner,
docs/reference.md#keepfit-v2-inferred).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..runtime import distributed as dist_utils

__all__ = ["caption_loss", "count_target_tokens", "target_positions", "token_cross_entropy"]

_IGNORE = -100


def _shifted_targets(tokens: Tensor, pad_id: int, mask: Tensor | None) -> Tensor:
    """Targets ``tokens[:, 1:]`` with ignored positions set to ``-100``."""
    targets = tokens[:, 1:]
    keep = targets != pad_id if mask is None else mask[:, 1:].bool()
    return targets.masked_fill(~keep, _IGNORE)


def target_positions(tokens: Tensor, pad_id: int, mask: Tensor | None = None) -> Tensor:
    """Boolean ``[B, L-1]``: which shifted targets are scored (the inputs at those positions predict them)."""
    return _shifted_targets(tokens, pad_id, mask) != _IGNORE


def token_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0,
                        global_token_count: Tensor | None = None) -> Tensor:
    """Cross-entropy of already-selected positions (``[N, V]`` vs ``[N]``), normalised like :func:`caption_loss`.

    Used with logits computed only at scored positions: the vocabulary projection is most of a small
    decoder's cost, and pads/the last position need none.
    """
    token_sum = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing, reduction="sum")
    if global_token_count is None:
        return token_sum / max(targets.numel(), 1)
    count = torch.as_tensor(global_token_count, device=token_sum.device).float().clamp_min(1)
    return token_sum / count * dist_utils.get_world_size()


def count_target_tokens(tokens: Tensor, pad_id: int, mask: Tensor | None = None) -> Tensor:
    """Number of scored target tokens of a batch; all-reduce it to get ``global_token_count``."""
    return (_shifted_targets(tokens, pad_id, mask) != _IGNORE).sum()


def caption_loss(
    logits: Tensor,
    tokens: Tensor,
    pad_id: int,
    label_smoothing: float = 0.0,
    global_token_count: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Mean token cross-entropy of ``logits[:, :-1]`` (``[B, L, V]``) against ``tokens[:, 1:]`` (``[B, L]``).

    Positions whose target equals ``pad_id`` are ignored; pass ``mask`` (``[B, L]``, 1 = keep, aligned with
    ``tokens``) instead when the pad id doubles as BOS/EOS, as in the KeepFIT-FFA tokenizer (id 0 is BOS, EOS and pad).

    Without ``global_token_count`` the loss is the mean over this batch's target tokens. With it (the token count
    all-reduced over ranks, see :func:`count_target_tokens`) the loss is ``sum / global_count * world_size``:
    DDP averages gradients over ranks, so the ``world_size`` factor cancels and the update is exactly that of the
    global token mean, however unevenly the tokens are spread over ranks.
    """
    scored = target_positions(tokens, pad_id, mask)
    return token_cross_entropy(logits[:, :-1][scored], tokens[:, 1:][scored], label_smoothing, global_token_count)
