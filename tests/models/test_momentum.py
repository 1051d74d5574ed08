"""EMA updates and the feature queue (the pointer wraps; EMA with m = 0 copies the weights)."""
from __future__ import annotations

import torch
from torch import nn

from fundus_vlp.models.momentum import FeatureQueue, create_momentum_copy, ema_update


def _tower(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_ema_with_zero_momentum_copies_weights():
    online, momentum = _tower(0), _tower(1)
    online[1].running_mean.fill_(0.7)
    ema_update(online, momentum, m=0.0)
    for a, b in zip(online.state_dict().values(), momentum.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ema_interpolates_parameters_and_copies_buffers():
    online, momentum = _tower(0), _tower(1)
    before = {k: v.clone() for k, v in momentum.named_parameters()}
    online[1].running_var.fill_(2.0)
    ema_update(online, momentum, m=0.75)
    for name, p in momentum.named_parameters():
        expected = 0.75 * before[name] + 0.25 * dict(online.named_parameters())[name]
        torch.testing.assert_close(p, expected)
    torch.testing.assert_close(momentum[1].running_var, torch.full((3,), 2.0))
    ema_update(online, momentum, m=1.0)  # m = 1 freezes the parameters
    for name, p in momentum.named_parameters():
        torch.testing.assert_close(p, 0.75 * before[name] + 0.25 * dict(online.named_parameters())[name])


def test_create_momentum_copy_has_no_grad():
    online = _tower(0)
    momentum = create_momentum_copy(online)
    assert all(not p.requires_grad for p in momentum.parameters())
    assert all(p.requires_grad for p in online.parameters())
    torch.testing.assert_close(momentum[0].weight, online[0].weight)


def _batch(start: int, size: int, dim: int = 2, labels: int = 3):
    ids = torch.arange(start, start + size, dtype=torch.float32)
    return ids[:, None].repeat(1, dim), -ids[:, None].repeat(1, dim), torch.ones(size, labels) * ids[:, None]


def test_queue_pointer_wraps():
    queue = FeatureQueue(size=5, dim=2, num_labels=3)
    assert queue.ptr.item() == 0 and not queue.valid.any()
    queue.enqueue(*_batch(1, 2))
    queue.enqueue(*_batch(3, 2))
    assert queue.ptr.item() == 4
    assert queue.valid.tolist() == [True, True, True, True, False]
    queue.enqueue(*_batch(5, 2))  # crosses the end: slots 4 and 0
    assert queue.ptr.item() == 1
    assert queue.valid.all()
    assert queue.image[:, 0].tolist() == [6.0, 2.0, 3.0, 4.0, 5.0]
    assert queue.text[:, 0].tolist() == [-6.0, -2.0, -3.0, -4.0, -5.0]
    assert queue.labels[:, 0].tolist() == [6.0, 2.0, 3.0, 4.0, 5.0]


def test_queue_batch_larger_than_queue_keeps_latest():
    queue = FeatureQueue(size=3, dim=2, num_labels=1)
    queue.enqueue(*_batch(1, 1, labels=1))
    queue.enqueue(*_batch(10, 4, labels=1))  # 10..13 written from slot 1; the last 3 survive
    assert queue.ptr.item() == (1 + 4) % 3
    assert sorted(queue.image[:, 0].tolist()) == [11.0, 12.0, 13.0]
    assert queue.image[(queue.ptr.item() - 1) % 3, 0].item() == 13.0  # newest just before ptr


def test_queue_state_dict_round_trip():
    queue = FeatureQueue(size=4, dim=2, num_labels=3)
    queue.enqueue(*_batch(1, 3))
    state = queue.state_dict()
    assert set(state) == {"image", "text", "labels", "valid", "ptr"}
    restored = FeatureQueue(size=4, dim=2, num_labels=3)
    restored.load_state_dict(state)
    assert restored.ptr.item() == 3 and restored.valid.tolist() == [True, True, True, False]
    torch.testing.assert_close(restored.image, queue.image)


def test_queue_candidates_layout():
    queue = FeatureQueue(size=2, dim=2, num_labels=3)
    queue.enqueue(*_batch(7, 1))
    img, txt, labels = _batch(1, 3)
    bank_img, bank_txt, bank_labels, valid = queue.candidates(img, txt, labels)
    assert bank_img.shape == (5, 2) and bank_labels.shape == (5, 3)
    assert bank_img[:, 0].tolist() == [1.0, 2.0, 3.0, 7.0, 0.0]
    assert valid.tolist() == [True, True, True, True, False]
