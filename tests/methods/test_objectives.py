"""Each method's objective is the weighted sum it documents, and every weight really reaches the gradient.

The weights are set to non-default values; a weight that silently did nothing (a term added with 1.0, a
weight read from the wrong config section) fails here.
"""
from __future__ import annotations

from functools import reduce

import pytest
import torch

from conftest import build_trainer, first_batch

NO_DROPOUT = {"keepfit.revision.attn_dropout": 0.0, "keepfit_v2.revision.attn_dropout": 0.0}

# method -> (weights set in the config, the weight of each logged term)
OBJECTIVES = {
    "clip": ({}, {"contrastive": 1.0}),
    "flair": ({}, {"public": 1.0}),
    "vilref": ({"vilref.queue_size": 16}, {"wsc": 1.0}),
    "keepfit": ({"keepfit.lambda_mm": 0.3, "keepfit.revision.weight": 7.0},
                {"public": 1.0, "elite": 0.3, "revision": 7.0}),
    "keepfit_v2": ({"keepfit_v2.lambda_elite": 0.4, "keepfit_v2.lambda_gen": 2.5,
                    "keepfit_v2.revision.enabled": "true", "keepfit_v2.revision.weight": 3.0},
                   {"public": 1.0, "elite": 0.4, "caption": 2.5, "revision": 3.0}),
}


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_total_is_the_weighted_sum_of_the_logged_terms(method, image_dataset, tiny_overrides, tmp_path):
    weights_cfg, weights = OBJECTIVES[method]
    trainer = build_trainer(method, image_dataset, tiny_overrides, tmp_path, **NO_DROPOUT, **weights_cfg)
    losses = trainer.task(first_batch(trainer))
    assert set(weights) <= set(losses)
    expected = sum(w * losses[name] for name, w in weights.items())
    torch.testing.assert_close(losses["loss"].detach(), expected, rtol=1e-5, atol=1e-6)


def _set(cfg, dotted: str, value: float) -> None:
    *path, leaf = dotted.split(".")
    setattr(reduce(getattr, path, cfg), leaf, value)


def _gradient(task, batch) -> torch.Tensor:
    task.zero_grad(set_to_none=False)
    task(batch)["loss"].backward()
    return torch.cat([p.grad.flatten() for p in task.parameters() if p.grad is not None]).clone()


@pytest.mark.parametrize("method, weight", [
    ("keepfit", "keepfit.lambda_mm"),
    ("keepfit", "keepfit.revision.weight"),
    ("keepfit_v2", "keepfit_v2.lambda_elite"),
    ("keepfit_v2", "keepfit_v2.lambda_gen"),
    ("keepfit_v2", "keepfit_v2.revision.weight"),
])
def test_each_weight_changes_the_gradient_linearly(method, weight, image_dataset, tiny_overrides, tmp_path):
    """g(λ) = g_rest + λ·g_term: the steps from λ=0 to 1 and from 1 to 2 are equal and not zero."""
    trainer = build_trainer(method, image_dataset, tiny_overrides, tmp_path, **NO_DROPOUT,
                            **{"keepfit_v2.revision.enabled": "true"})
    batch = first_batch(trainer)
    grads = []
    for value in (0.0, 1.0, 2.0):
        _set(trainer.cfg, weight, value)  # the run config's section is the object the method reads
        grads.append(_gradient(trainer.task, batch))
    step1, step2 = grads[1] - grads[0], grads[2] - grads[1]
    assert step1.norm() > 1e-4 * grads[0].norm(), f"{weight} does not reach the gradient"
    assert (step2 - step1).norm() < 1e-3 * step1.norm(), f"{weight} does not scale its term linearly"
