"""Locking the text tower: frozen parts are a fixed feature extractor (no dropout), unlocked layers still train."""
from __future__ import annotations

import torch

from fundus_vlp.factory import create_model


DROPOUT = {"text.config_overrides.hidden_dropout_prob": 0.2, "text.config_overrides.attention_probs_dropout_prob": 0.2}


def _twice(model, ids):
    return model.encode_text(ids), model.encode_text(ids)


def test_locked_text_tower_runs_without_dropout_in_train_mode(tiny_overrides):
    torch.manual_seed(0)
    model = create_model("tiny", **tiny_overrides, **DROPOUT)
    assert model.text.transformer.config.hidden_dropout_prob == 0.2
    ids = model.tokenizer(["glaucoma with a large cup", "normal fundus"])
    model.train()
    a, b = _twice(model, ids)
    assert not torch.allclose(a, b)  # dropout active while the tower trains
    model.lock_text_tower(0)
    model.train()
    a, b = _twice(model, ids)
    assert torch.equal(a, b) and model.text.head.training
    model.eval()
    assert torch.allclose(model.encode_text(ids), a, atol=1e-6)  # the same features as at inference


def test_partly_locked_text_tower_keeps_dropout_in_its_trainable_layers(tiny_overrides):
    torch.manual_seed(0)
    model = create_model("tiny", **tiny_overrides, **DROPOUT)
    model.lock_text_tower(1)
    model.train()
    layers = model.text.transformer.encoder.layer
    assert layers[-1].training and not layers[0].training and not model.text.transformer.embeddings.training
    a, b = _twice(model, model.tokenizer(["glaucoma with a large cup"]))
    assert not torch.allclose(a, b)


def test_fully_locked_tower_reuses_pooled_features_exactly(tiny_overrides):
    torch.manual_seed(0)
    model = create_model("tiny", **tiny_overrides, **DROPOUT)
    model.lock_text_tower(0)
    model.train()
    texts = ["glaucoma with a large cup", "normal fundus", "drusen at the macula"]
    fresh = model.encode_text(model.tokenizer(texts))
    assert len(model.text._pooled_cache) == 3
    # the same texts in another order and padding length come from the cache, unchanged
    again = model.encode_text(model.tokenizer(texts[::-1], padding="longest"))
    assert torch.equal(again, fresh.flip(0)) and len(model.text._pooled_cache) == 3
    # the projection still trains on top of the cached features
    again.sum().backward()
    assert model.text.head.projection.weight.grad is not None
    assert all(p.grad is None for p in model.text.transformer.parameters())
    # new weights for the encoder empty the cache
    state = {k: v + 0.01 for k, v in model.text.transformer.state_dict().items()}
    model.text.transformer.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.encode_text(model.tokenizer(texts)), model.text.head(model.text._pool(
            model.tokenizer(texts))), atol=1e-6)
    assert not torch.allclose(model.encode_text(model.tokenizer(texts)), fresh)
    model.text.lock(1)  # a trainable layer: no cache
    assert model.text._pooled_cache is None
