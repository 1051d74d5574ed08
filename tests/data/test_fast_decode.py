"""Reduced-size JPEG decoding (PIL draft) gives the model the same pixels within a stated tolerance,
and the loader's default worker count follows the core count."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fundus_vlp.config import PreprocessCfg
from fundus_vlp.data.images import load_image
from fundus_vlp.data.loader import resolve_num_workers
from fundus_vlp.data.transforms import build_transform, resize_pad_to_square

# Against the full-size decode, the model input of a draft decode (at twice the model's size) may differ by
# this much, in 1/255 steps: on average half a step; at most 8 steps, reached only at hard edges such as the
# field-of-view border (benchmark fundus JPEGs, 1500 px: mean 0.1, max 1.7; this test image: mean 0.1, max 6).
MEAN_ABS_TOL, MAX_ABS_TOL = 0.5 / 255, 8 / 255


def _fundus_like_jpeg(path, size: int = 1200, seed: int = 0):
    """A smooth round fundus with thin dark vessels and sensor grain: fine detail a decoder must keep."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    r = np.hypot(yy - 0.5, xx - 0.5)
    fov = (r < 0.45).astype(np.float32)
    vessels = sum(np.exp(-((np.sin(7 * xx + k) * 0.1 + 0.5 - yy + 0.1 * k) ** 2) / 2e-5) for k in range(-3, 4))
    img = np.stack([180 - 60 * r, 80 - 40 * r, 40 - 20 * r], -1) * fov[..., None]
    img -= 50 * vessels[..., None] * fov[..., None]
    img += rng.normal(0, 3, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=95)
    return path


@pytest.mark.parametrize("size", [128, 224])
def test_draft_decode_matches_the_full_decode_within_tolerance(tmp_path, size):
    path = _fundus_like_jpeg(tmp_path / "f.jpg")
    tf = build_transform(PreprocessCfg(size=size), train=False)
    assert tf.draft_size == 2 * size
    drafted = load_image(path, draft_size=tf.draft_size)
    assert drafted.shape[1] < 1200 and min(drafted.shape[1:]) >= tf.draft_size  # really decoded smaller
    diff = (tf(drafted) - tf(load_image(path))).abs()
    assert diff.mean() < MEAN_ABS_TOL and diff.max() < MAX_ABS_TOL


def test_draft_leaves_png_and_fov_crop_alone(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert torch.equal(load_image(tmp_path / "a.png", draft_size=64), load_image(tmp_path / "a.png"))
    assert build_transform(PreprocessCfg(size=64, fov_crop=True)).draft_size is None  # the crop needs every pixel


def test_resize_is_skipped_when_the_image_already_has_the_model_size():
    x = torch.rand(3, 32, 32)
    assert resize_pad_to_square(x, 32) is x


@pytest.mark.parametrize("cores,expected", [(1, 0), (2, 0), (4, 0), (8, 2), (16, 4), (64, 8)])
def test_default_loader_workers_leave_small_machines_cores_to_compute(cores, expected):
    assert resolve_num_workers(-1, cores) == expected
    assert resolve_num_workers(3, cores) == 3  # an explicit count is kept
