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
