"""Feature extraction: evaluation transform only (no augmentation), deterministic, cached on disk."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import fundus_vlp.inference.features as features_mod
import fundus_vlp.inference.inputs as inputs_mod
from fundus_vlp.data.images import load_image
from fundus_vlp.data.transforms import build_transform
from fundus_vlp.inference.embedding import extract_features
from fundus_vlp.inference.features import FeatureCache, model_fingerprint


@pytest.fixture(scope="module")
def model():
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    return create_model("tiny").eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat_imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        arr = (rng.random((70, 90, 3)) * 255).astype(np.uint8)
        arr[:, : 20 + 5 * i] = 30  # asymmetric, so a horizontal flip changes the features
        p = root / f"im{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def test_features_use_the_eval_transform_and_are_deterministic(model, images, monkeypatch):
    calls = []
    real = inputs_mod.build_transform

    def spy(cfg, train=False, aug=None):
        calls.append(train)
        return real(cfg, train=train, aug=aug)

    monkeypatch.setattr(inputs_mod, "build_transform", spy)
    a = extract_features(model, images, progress=False, batch_size=4)
    b = extract_features(model, images, progress=False, batch_size=4)
    assert calls == [False, False]
    torch.testing.assert_close(a, b)  # an augmenting extractor would give different features
    direct = model.encode_image(torch.stack([build_transform(model.cfg.preprocess)(load_image(p)) for p in images]))
    torch.testing.assert_close(a, direct.detach(), atol=1e-5, rtol=1e-4)
    # the check is sensitive: augmented inputs do change the features
    aug = build_transform(model.cfg.preprocess, train=True)
    flipped = torch.stack([aug(load_image(p), rng=np.random.default_rng(1)) for p in images])
    assert not torch.allclose(model.encode_image(flipped).detach(), a, atol=1e-4)


def test_cache_is_hit_on_the_second_call(model, images, tmp_path, monkeypatch):
    n_extract = []
    real = features_mod.extract_features
    monkeypatch.setattr(features_mod, "extract_features", lambda *a, **k: n_extract.append(1) or real(*a, **k))
    cache = FeatureCache(tmp_path)
    fp = model_fingerprint(model)
    first = cache.get(model, images, tag="exp", fingerprint=fp, progress=False)
    second = cache.get(model, images, tag="exp", fingerprint=fp, progress=False)
    assert (cache.hits, cache.misses, len(n_extract)) == (1, 1, 1)
    torch.testing.assert_close(first, second)
    assert list(tmp_path.glob("*.safetensors"))  # no pickle
    # a different projection flag or different weights is a different entry
    raw = cache.get(model, images, tag="exp", fingerprint=fp, project=False, progress=False)
    assert raw.shape[1] == model.visual.width and cache.misses == 2
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.visual.head.projection.weight.add_(0.01)
    assert model_fingerprint(changed) != fp


def test_weights_file_fingerprint(tmp_path, model):
    model.save_pretrained(tmp_path / "m")
    fp = model_fingerprint(model, tmp_path / "m" / "model.safetensors")
    assert fp.startswith("file-") and fp == model_fingerprint(model, tmp_path / "m" / "model.safetensors")


def test_bad_image_names_file_and_row(model, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.png.*rows\.csv, row 7"):
        extract_features(model, [bad], ["rows.csv, row 7"], progress=False)


def test_cache_key_follows_image_content_and_preprocessing(model, tmp_path):
    """An image rewritten in place, or another preprocessing, is a new cache entry (never stale features)."""
    rng = np.random.default_rng(5)
    paths = [tmp_path / f"c{i}.png" for i in range(3)]
    for p in paths:
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(p)
    cache, fp = FeatureCache(tmp_path / "cache"), model_fingerprint(model)
    first = cache.get(model, paths, tag="t", fingerprint=fp, progress=False)
    cache.get(model, paths, tag="t", fingerprint=fp, progress=False)
    assert (cache.hits, cache.misses) == (1, 1)

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(paths[1])  # same name, new pixels
    rewritten = cache.get(model, paths, tag="t", fingerprint=fp, progress=False)
    assert cache.misses == 2 and not torch.allclose(rewritten[1], first[1])
    torch.testing.assert_close(rewritten[0], first[0])

    other = copy.deepcopy(model)
    other.cfg.preprocess.size = 48
    cache.get(other, paths, tag="t", fingerprint=fp, progress=False)  # same weights, other preprocessing
    assert cache.misses == 3
