"""CLIP-style contrastive losses: identity targets (InfoNCE) and label-aware soft targets (FLAIR / KeepFIT).

Distributed semantics follow open_clip's ``local_loss`` + ``gather_with_grad``:
features are all-gathered with gradient, each rank scores its ``n`` rows against all ``N = n * world`` columns,
and with DDP's gradient averaging the result is exactly the gradient of the single-process loss on the
concatenated global batch. All logits are computed in fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..runtime import distributed as dist_utils

__all__ = ["label_aware_targets", "soft_target_cross_entropy", "clip_logits", "ClipLoss"]


def label_aware_targets(
    row_labels: Tensor,
    col_labels: Tensor,
    row_offset: int = 0,
    ignore_index: int = -1,
    empty_as_class: bool = False,
) -> Tensor:
    """Soft targets ``Y[n, N]`` from class ids: ``C_ij = 1[c_i == c_j]``, rows normalised to sum 1.

    See docs/reference.md#label-aware-contrastive-loss. Rows are this rank's samples, columns the global batch,
    and row ``i``'s own column is ``row_offset + i``. A sample labelled ``ignore_index`` (the empty category) is the
    positive of itself only; ``empty_as_class=True`` keeps the official behaviour where empty samples are mutual
    positives.
    """
    n, num_cols = row_labels.shape[0], col_labels.shape[0]
    if row_offset < 0 or row_offset + n > num_cols:
        raise ValueError(f"rows [{row_offset}, {row_offset + n}) do not fit in {num_cols} columns")
    same = row_labels.reshape(-1, 1) == col_labels.reshape(1, -1)
    if not empty_as_class:
        same &= (row_labels != ignore_index).reshape(-1, 1)
    rows = torch.arange(n, device=same.device)
    same[rows, rows + row_offset] = True  # every sample is its own positive
    targets = same.float()
    return targets / targets.sum(dim=-1, keepdim=True)


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """``-(targets * log_softmax(logits)).sum(-1).mean()``, i.e. cross-entropy with probability targets."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def _gather_features(x: Tensor, with_grad: bool) -> Tensor:
    """All-gather ``x``; without grad, the local tensor is put back in its own slot (open_clip's trick)."""
    if with_grad:
        return dist_utils.all_gather_with_grad(x)
    chunks = list(dist_utils.all_gather_no_grad(x).chunk(dist_utils.get_world_size(), dim=0))
    chunks[dist_utils.get_rank()] = x
    return torch.cat(chunks, dim=0)


def clip_logits(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    gather: bool = True,
    gather_with_grad: bool = True,
    local_loss: bool = True,
) -> tuple[Tensor, Tensor, int]:
    """Return ``(logits_per_image [n, N], logits_per_text [n, N], row_offset)`` in fp32.

    ``logit_scale`` is the multiplier (already exponentiated). Without gathering (or in a single process)
    ``n = N`` = the local batch and ``row_offset = 0``. With gathering and ``local_loss`` each rank keeps its own
    ``n`` rows and ``row_offset = rank * n``; without ``local_loss`` every rank computes the full ``N x N`` block.
    """
    with torch.autocast(device_type=image_features.device.type, enabled=False):
        image_features, text_features = image_features.float(), text_features.float()
        scale = torch.as_tensor(logit_scale, device=image_features.device).float()
        if not (gather and dist_utils.get_world_size() > 1):
            logits_per_image = scale * image_features @ text_features.T
            return logits_per_image, logits_per_image.T, 0

        all_image = _gather_features(image_features, gather_with_grad)
        all_text = _gather_features(text_features, gather_with_grad)
        if local_loss:
            logits_per_image = scale * image_features @ all_text.T
            logits_per_text = scale * text_features @ all_image.T
            return logits_per_image, logits_per_text, dist_utils.get_rank() * image_features.shape[0]
        logits_per_image = scale * all_image @ all_text.T
        return logits_per_image, logits_per_image.T, 0


class ClipLoss(nn.Module):
    """Symmetric CLIP loss ``½(CE(L_img, Y) + CE(L_txt, Y))`` with identity or label-aware targets.

    ``labels=None`` gives identity targets (standard InfoNCE, for CLIP and elite image–caption pairs);
    class ids give label-aware soft targets (FLAIR / KeepFIT public batches,
    docs/reference.md#label-aware-contrastive-loss),
    with the labels all-gathered (no grad) for the columns.

    Args:
        local_loss: each rank scores only its own rows against the global columns.
        gather_with_grad: differentiable all-gather (needed for exact DDP gradients).
        empty_as_class: ``bug_compat`` switch, empty-category samples become mutual positives.
        gather: ``False`` restricts negatives to the local per-GPU batch, as the official KeepFIT/FLAIR code does.
    """

    def __init__(
        self,
        local_loss: bool = True,
        gather_with_grad: bool = True,
        empty_as_class: bool = False,
        ignore_index: int = -1,
        gather: bool = True,
    ) -> None:
        super().__init__()
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.empty_as_class = empty_as_class
        self.ignore_index = ignore_index
        self.gather = gather

    def _is_gathering(self) -> bool:
        return self.gather and dist_utils.get_world_size() > 1

    def _label_targets(self, labels: Tensor, row_offset: int) -> Tensor:
        if not self._is_gathering():
            row_labels = col_labels = labels
        else:
            col_labels = dist_utils.all_gather_no_grad(labels)
            row_labels = labels if self.local_loss else col_labels
        return label_aware_targets(
            row_labels, col_labels, row_offset, ignore_index=self.ignore_index, empty_as_class=self.empty_as_class
        )

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor | float,
        labels: Tensor | None = None,
    ) -> Tensor:
        logits_per_image, logits_per_text, row_offset = clip_logits(
            image_features,
            text_features,
            logit_scale,
            gather=self.gather,
            gather_with_grad=self.gather_with_grad,
            local_loss=self.local_loss,
        )
        if labels is None:
            targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device) + row_offset
            return 0.5 * (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets))
        soft_targets = self._label_targets(labels.to(logits_per_image.device), row_offset)
        return 0.5 * (
            soft_target_cross_entropy(logits_per_image, soft_targets)
            + soft_target_cross_entropy(logits_per_text, soft_targets)
        )
