"""Pad-to-square canvas, FOV crop, seeded augmentation, on synthetic and real (skimage) retina images."""
from __future__ import annotations

import numpy as np
import torch

from fundus_vlp.config import AugmentCfg, PreprocessCfg
from fundus_vlp.data.images import image_from_array
from fundus_vlp.data.transforms import augment, build_transform, fov_crop, resize_pad_to_square


def test_pad_to_square_keeps_aspect_and_pads_bottom_right():
    img = torch.ones(3, 50, 100)
    out = resize_pad_to_square(img, 64)
    assert out.shape == (3, 64, 64)
    assert torch.all(out[:, :32, :] > 0.99) and torch.all(out[:, 32:, :] == 0)  # content top-left (flair.md §5.1)


def test_real_retina_photograph_fov_crop_and_canvas():
    from skimage import data

    retina = image_from_array(data.retina())  # CC0 photograph bundled with scikit-image
    cropped = fov_crop(retina)
    assert cropped.shape[1] < retina.shape[1] or cropped.shape[2] < retina.shape[2]
    tf = build_transform(PreprocessCfg(size=128, fov_crop=True))
    out = tf(retina)
    assert out.shape == (3, 128, 128) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_fov_crop_leaves_uniform_image_alone():
    img = torch.full((3, 20, 20), 0.5)
    assert torch.equal(fov_crop(img), img)


def test_augmentation_is_reproducible_per_seed():
    img = torch.rand(3, 32, 32)
    cfg = AugmentCfg(hflip_p=0.5, affine_p=1.0, jitter_p=1.0)
    a = augment(img.clone(), cfg, np.random.default_rng(3))
    b = augment(img.clone(), cfg, np.random.default_rng(3))
    c = augment(img.clone(), cfg, np.random.default_rng(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_transform_is_deterministic_and_normalises():
    tf = build_transform(PreprocessCfg(size=16, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]))
    img = torch.rand(3, 20, 30)
    assert torch.equal(tf(img), tf(img))
    assert float(tf(torch.ones(3, 16, 16)).max()) == 1.0


def test_canvas_size_truncates_like_the_official_code():
    from fundus_vlp.data.transforms import canvas_size

    assert canvas_size(100, 150, 64) == (42, 64)  # 42.67 truncated; rounding would give 43
    assert canvas_size(150, 100, 64) == (64, 42)
    assert canvas_size(77, 77, 64) == (64, 64)
    assert resize_pad_to_square(torch.ones(3, 100, 150), 64)[:, 42:, :].abs().max() == 0
