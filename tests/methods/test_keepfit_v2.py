"""KeepFIT V2: one forward gives every term, and every parameter (decoder and revision included) a gradient."""
from __future__ import annotations

from conftest import build_trainer, first_batch


def test_keepfit_v2_every_parameter_gets_gradient(image_dataset, tiny_overrides, tmp_path):
    trainer = build_trainer("keepfit_v2", image_dataset, tiny_overrides, tmp_path,
                            **{"keepfit_v2.revision.enabled": "true"})
    losses = trainer.task(first_batch(trainer))
    losses["loss"].backward()
    missing = [n for n, p in trainer.task.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert {"public", "elite", "caption", "revision"} <= set(losses)
