"""The one place that turns a device setting ("auto", "cpu", "cuda", "cuda:1") into a ``torch.device``."""
from __future__ import annotations

import torch


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; a bare ``"cuda"`` becomes ``cuda:{local_rank}`` so that
    each process of a multi-GPU job uses its own card (never a global ``cuda:0``)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank)
    return resolved
