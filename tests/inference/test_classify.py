"""The Python API on a loaded model: classify / embed_images / embed_texts, and fundus_vlp.search."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import fundus_vlp
from fundus_vlp.data.images import BadImageError, load_image
from fundus_vlp.data.transforms import build_transform
from fundus_vlp.inference.zero_shot import build_zero_shot_classifier, load_knowledge, negative_prototypes

LABELS = ["normal", "glaucoma", "cataract"]


def _images(root, n=3, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(40 + 4 * i, 56, 3), dtype=np.uint8)  # non-square, different sizes
        Image.fromarray(arr).save(root / f"img{i}.png")
        paths.append(root / f"img{i}.png")
    return paths


def _reference_probs(model, paths, labels, knowledge, multilabel=False):
    """What evaluation does, spelled out: eval transform, encode, prototypes, softmax or pair sigmoid."""
    transform = build_transform(model.cfg.preprocess, train=False)
    with torch.no_grad():
        feats = model.encode_image(torch.stack([transform(load_image(p)) for p in paths]))
        pos = build_zero_shot_classifier(model, labels, knowledge=knowledge)
        if multilabel:
            neg = negative_prototypes(model, labels)
            return torch.sigmoid(model.scale() * (feats @ pos.T - feats @ neg.T))
        return (model.scale() * feats @ pos.T).softmax(-1)


def test_classify_matches_the_evaluation_path_for_every_input_kind(tiny_model, tmp_path):
    paths = _images(tmp_path / "imgs")
    tiny_model.eval()
    ref = _reference_probs(tiny_model, paths, LABELS, load_knowledge("fundus_en")).numpy()

    by_path = tiny_model.classify([str(p) for p in paths], LABELS)
    assert isinstance(by_path, pd.DataFrame) and list(by_path.columns) == LABELS
    assert list(by_path.index) == [str(p) for p in paths] and by_path.index.name == "image"
    np.testing.assert_allclose(by_path.to_numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(by_path.sum(axis=1), 1.0, atol=1e-6)

    by_folder = tiny_model.classify(tmp_path / "imgs", LABELS, batch_size=2)  # batching must not change results
    np.testing.assert_allclose(by_folder.to_numpy(), ref, atol=1e-6)
    arrays = [np.asarray(Image.open(p)) for p in paths]
    by_array = tiny_model.classify(arrays, LABELS)
    assert list(by_array.index) == ["image_0", "image_1", "image_2"]
    np.testing.assert_allclose(by_array.to_numpy(), ref, atol=1e-6)
    by_pil = tiny_model.classify([Image.open(p) for p in paths], LABELS)
    np.testing.assert_allclose(by_pil.to_numpy(), ref, atol=1e-6)


def test_domain_knowledge_and_multilabel_switches(tiny_model, tmp_path):
    paths = _images(tmp_path / "imgs", n=2)
    tiny_model.eval()
    bare = tiny_model.classify(paths, LABELS, domain_knowledge=False)
    np.testing.assert_allclose(bare.to_numpy(), _reference_probs(tiny_model, paths, LABELS, None).numpy(), atol=1e-6)
    with_kb = tiny_model.classify(paths, LABELS)
    assert not np.allclose(bare.to_numpy(), with_kb.to_numpy())  # descriptions change the prototypes

    multi = tiny_model.classify(paths, ["glaucoma"], multilabel=True)
    ref = _reference_probs(tiny_model, paths, ["glaucoma"], load_knowledge("fundus_en"), multilabel=True)
    np.testing.assert_allclose(multi.to_numpy(), ref.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="at least two labels"):
        tiny_model.classify(paths, ["glaucoma"])
    with pytest.raises(ValueError, match="duplicate"):
        tiny_model.classify(paths, ["glaucoma", "glaucoma"])


def test_embeddings_are_unit_norm_and_bad_files_are_named(tiny_model, tmp_path):
    paths = _images(tmp_path / "imgs", n=2)
    emb = tiny_model.embed_images(paths)
    assert emb.shape == (2, tiny_model.cfg.embed_dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    txt = tiny_model.embed_texts("a fundus photograph of glaucoma")
    assert txt.shape == (1, tiny_model.cfg.embed_dim)
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(1))
    seen = []
    tiny_model.embed_images(paths, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(BadImageError, match="bad.png"):
        tiny_model.embed_images([paths[0], tmp_path / "bad.png"])


def test_search_ranks_by_text_similarity_and_caches(tiny_model, tmp_path, monkeypatch):
    paths = _images(tmp_path / "imgs", n=4)
    tiny_model.eval()
    query = "a fundus photograph of glaucoma"
    top = fundus_vlp.search(tiny_model, tmp_path / "imgs", query, k=3, cache_dir=tmp_path / "cache")
    scores = (tiny_model.embed_images(paths) @ tiny_model.embed_texts(query)[0]).numpy()
    order = np.argsort(-scores)[:3]
    assert list(top["image"]) == [str(paths[i]) for i in order]
    np.testing.assert_allclose(top["score"].to_numpy(), scores[order], atol=1e-6)
    assert list(top.index) == [1, 2, 3] and not top.attrs["cache_hit"]

    again = fundus_vlp.search(tiny_model, tmp_path / "imgs", query, k=3, cache_dir=tmp_path / "cache")
    assert again.attrs["cache_hit"] and again.equals(top)
    # a replaced image (new size/mtime) must not be served from the cache
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(paths[0])
    changed = fundus_vlp.search(tiny_model, tmp_path / "imgs", query, k=4, cache_dir=tmp_path / "cache")
    assert not changed.attrs["cache_hit"]


def test_search_by_image_with_an_image_only_model(tmp_path):
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    model = create_model("tiny-image-only").eval()
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    top = fundus_vlp.search(model, folder, folder / "3.png", k=2, cache_dir=False)
    assert Path(top["image"].iloc[0]).name == "3.png" and top["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    array = np.asarray(Image.open(folder / "1.png"))
    assert Path(fundus_vlp.search(model, folder, array, k=1, cache_dir=False)["image"].iloc[0]).name == "1.png"
    with pytest.raises(RuntimeError, match="^image-only model"):
        fundus_vlp.search(model, folder, "a glaucoma disc", k=1, cache_dir=False)
