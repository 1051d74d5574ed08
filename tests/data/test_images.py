"""Image decoding for every mode datasets ship, and bad files named with their row."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fundus_vlp.data.images import BadImageError, image_from_array, load_image


def _save(tmp_path, name, img):
    path = tmp_path / name
    img.save(path)
    return path


def test_rgb_and_rgba_drop_alpha_not_red(tmp_path):
    arr = np.zeros((4, 5, 4), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2], arr[..., 3] = 200, 100, 50, 7
    x = load_image(_save(tmp_path, "a.png", Image.fromarray(arr, "RGBA")))
    assert x.shape == (3, 4, 5)
    assert np.allclose(x[:, 0, 0].numpy(), [200 / 255, 100 / 255, 50 / 255], atol=1e-6)  # R kept, not dropped


def test_grayscale_palette_cmyk(tmp_path):
    g = load_image(_save(tmp_path, "g.png", Image.fromarray(np.full((3, 3), 128, np.uint8), "L")))
    assert g.shape == (3, 3, 3) and np.allclose(g.numpy(), 128 / 255)
    p = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    x = load_image(_save(tmp_path, "p.png", p))
    assert np.allclose(x[:, 0, 0].numpy(), [1, 0, 0]) and np.allclose(x[:, 0, 1].numpy(), [0, 0, 1])
    c = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red in CMYK
    x = load_image(_save(tmp_path, "c.jpg", c))
    assert x[0].mean() > 0.9 and x[1].mean() < 0.1


def test_16bit_png_keeps_full_range(tmp_path):
    arr = np.array([[0, 32768], [65535, 1000]], np.uint16)
    x = load_image(_save(tmp_path, "d.png", Image.fromarray(arr)))
    assert x.shape == (3, 2, 2)
    assert np.isclose(float(x[0, 1, 0]), 1.0) and np.isclose(float(x[0, 0, 1]), 32768 / 65535, atol=1e-4)


def test_missing_empty_corrupt_truncated(tmp_path):
    with pytest.raises(BadImageError, match=r"not found \(d.csv, row 3\)"):
        load_image(tmp_path / "nope.png", "d.csv, row 3")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadImageError, match="empty file"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(BadImageError, match="not a recognised image"):
        load_image(tmp_path / "junk.png")
    good = _save(tmp_path, "t.png", Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(BadImageError, match="corrupt or truncated"):
        load_image(tmp_path / "trunc.png", "x.csv, row 9")


def test_image_from_array_scales_uint8_once():
    arr = np.full((2, 2, 3), 255, np.uint8)
    assert float(image_from_array(arr).max()) == 1.0
    assert float(image_from_array(arr.astype(np.float32) / 255).max()) == 1.0  # not divided twice
    assert image_from_array(np.zeros((2, 2))).shape == (3, 2, 2)
