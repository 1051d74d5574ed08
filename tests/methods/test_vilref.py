"""ViLReF: the loss reaches the online towers only; momentum towers and queues are updated by EMA/enqueue."""
from __future__ import annotations

import torch

from conftest import build_trainer, first_batch


def test_gradients_flow_only_through_online_features(image_dataset, tiny_overrides, tmp_path):
    trainer = build_trainer("vilref", image_dataset, tiny_overrides, tmp_path, **{"vilref.queue_size": 16})
    task, batch = trainer.task, first_batch(trainer)
    task.queue.enqueue(torch.nn.functional.normalize(torch.randn(4, task.queue.image.shape[1]), dim=-1),
                       torch.nn.functional.normalize(torch.randn(4, task.queue.text.shape[1]), dim=-1),
                       torch.ones(4, task.queue.labels.shape[1]))  # a non-empty queue takes part in the loss
    queue_before = {k: v.clone() for k, v in task.queue.state_dict().items()}
    feats = task.encode(batch)
    assert not feats["main_image_m"].requires_grad and not feats["main_text_m"].requires_grad
    task.compute_losses(feats, batch)["loss"].backward()

    momentum = [*task.momentum_visual.parameters(), *task.momentum_text.parameters()]
    assert momentum and all(not p.requires_grad and p.grad is None for p in momentum)
    assert all(not b.requires_grad for b in task.queue.buffers())
    for tower in (task.model.visual, task.model.text):
        grads = [p.grad for p in tower.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    for key, value in task.queue.state_dict().items():  # the loss reads the queue, it does not write it
        assert torch.equal(value, queue_before[key]), key


def test_after_step_moves_momentum_towards_online_and_enqueues(image_dataset, tiny_overrides, tmp_path):
    trainer = build_trainer("vilref", image_dataset, tiny_overrides, tmp_path, **{"vilref.queue_size": 16,
                                                                                    "vilref.momentum": 0.5})
    task, batch = trainer.task, first_batch(trainer)
    with torch.no_grad():
        for p in task.model.visual.parameters():
            p.add_(1.0)  # online != momentum
    before = [p.clone() for p in task.momentum_visual.parameters()]
    online = [p.clone() for p in task.model.visual.parameters()]
    task(batch)
    filled = int(task.queue.valid.sum())
    task.after_step()
    for b, o, a in zip(before, online, task.momentum_visual.parameters()):
        torch.testing.assert_close(a, 0.5 * b + 0.5 * o)
    assert int(task.queue.valid.sum()) == filled + batch["main"]["images"].shape[0]
