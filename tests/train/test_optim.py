"""Optimiser groups and the warm-up + cosine schedule that ends at the real last step."""
from __future__ import annotations

import math

import pytest
import torch

from fundus_vlp.train.config import OptimCfg
from fundus_vlp.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups


def test_no_weight_decay_on_norms_biases_and_logit_scale(tiny_model):
    decay, no_decay = param_groups(tiny_model, 0.1)
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert "logit_scale" in no_decay_names
    assert all(not n.endswith(".bias") and "norm" not in n.lower() for n in decay_names)
    assert any(n.endswith(".bias") for n in no_decay_names) and any("LayerNorm" in n for n in no_decay_names)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1


def test_frozen_parameters_are_not_optimised(tiny_model):
    tiny_model.lock_text_tower(0)
    opt = build_optimizer(tiny_model, OptimCfg())
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in ids for p in tiny_model.text.transformer.parameters())


def test_warmup_then_cosine_reaches_min_lr_at_the_last_step():
    model = torch.nn.Linear(2, 2)
    cfg = OptimCfg(lr=1.0, warmup_steps=10, min_lr=0.1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=25, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up to lr
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-6)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # min_lr exactly after the last step
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    # the official schedule's 100-epoch horizon would still be at ~0.98 lr here
    assert lr_factor(99, 10, 100 * 25, "cosine") > 0.99 and math.isclose(lr_factor(100, 10, 100, "cosine"), 0.0)
