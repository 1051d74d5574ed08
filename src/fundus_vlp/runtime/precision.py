"""Mixed precision : autocast factory and a GradScaler only for fp16."""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "amp_bf16", "amp_fp16")


def autocast(precision: str, device: torch.device):
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "amp_bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Enabled only for fp16; a disabled scaler is a no-op with the same interface (and state_dict)."""
    return torch.amp.GradScaler(device.type, enabled=(precision == "amp_fp16"))
