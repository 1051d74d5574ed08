"""Seeding and RNG state capture, so that resumed runs replay exactly (RNG states go into every checkpoint)."""
from __future__ import annotations

import hashlib
import random
from typing import Any, Dict

import numpy as np
import torch


def derive_seed(*keys: Any) -> int:
    """A stable 63-bit seed from any tuple of keys (same keys -> same seed, across processes and runs)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def rng_for(*keys: Any) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*keys))


def seed_everything(seed: int, rank: int = 0, deterministic: bool = False) -> None:
    """seed + rank for torch/numpy/random (open_clip ``random_seed``); optional deterministic algorithms."""
    s = seed + rank
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():  # open_clip default: fast, non-deterministic kernels on GPU
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def capture_rng_state() -> Dict[str, Any]:
    """RNG states in a form ``torch.load(weights_only=True)`` accepts (numpy's state as tensors)."""
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value
