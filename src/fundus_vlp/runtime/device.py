"""The one place that turns a device setting ("auto", "cpu", "cuda", "cuda:1") into a ``torch.device``."""
from __future__ import annotations

import os

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


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, e.g. under taskset or a container quota)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
