"""One device resolver for training and evaluation; seeds and RNG states that resume runs exactly."""
from __future__ import annotations

import random

import numpy as np
import torch

from fundus_vlp.runtime.device import resolve_device
from fundus_vlp.runtime.seed import capture_rng_state, derive_seed, restore_rng_state


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 3)  # never a global cuda:0 per process
    assert resolve_device("cuda:1", local_rank=3) == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(1, "elite", 0) == derive_seed(1, "elite", 0)
    assert len({derive_seed(1, "elite", r) for r in range(8)}) == 8
    assert 0 <= derive_seed("x") < 2 ** 63


def test_rng_state_round_trip():
    state = capture_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
