"""Image-only models (no text tower, e.g. RETFound): build, save/load round trip, image embeddings, and a clear
error from every path that needs text."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fundus_vlp.cli.main import main
from fundus_vlp.factory import create_model, from_pretrained, get_tokenizer


@pytest.fixture(scope="module")
def image_only():
    torch.manual_seed(0)
    return create_model("tiny-image-only").eval()


def test_image_only_model_has_no_text_tower(image_only):
    assert image_only.is_image_only and image_only.text is None and image_only.logit_scale is None
    assert image_only.cfg.is_image_only and image_only.tokenizer is None
    assert not any(k.startswith("text.") or k == "logit_scale" for k in image_only.state_dict())


def test_save_and_load_round_trip_gives_the_same_embeddings(image_only, tmp_path):
    image_only.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / "vocab.txt").exists()
    loaded = from_pretrained(tmp_path / "m")
    assert loaded.is_image_only and loaded.cfg == image_only.cfg
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    ref, got = image_only.embed_images(images), loaded.embed_images(images)
    assert got.shape == (2, 64)
    torch.testing.assert_close(got, ref, atol=0, rtol=0)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(2))
    assert (got[0] - got[1]).abs().max() > 1e-3  # different images, different embeddings
    card = (tmp_path / "m" / "README.md").read_text()
    assert "image-only model" in card


def test_text_paths_say_image_only(image_only, tmp_path):
    for call in (lambda: image_only.encode_text(torch.zeros(1, 4, dtype=torch.long)),
                 lambda: image_only.classify(np.zeros((8, 8, 3), np.uint8), ["a", "b"]),
                 lambda: image_only.embed_texts("glaucoma"),
                 lambda: image_only.scale(),
                 lambda: get_tokenizer("tiny-image-only")):
        with pytest.raises(RuntimeError, match="^image-only model: "):
            call()
    image_only.save_pretrained(tmp_path / "m")
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "x.png")
    assert main(["predict", "--model", str(tmp_path / "m"), "--classes", "a,b", str(tmp_path / "x.png")]) == 1
