"""Fundus preprocessing (docs/reference.md#flair-preprocessing) and seeded training augmentation.

Every random draw comes from a generator passed in by the caller (seeded per sample and epoch), so
a run that is killed and resumed sees exactly the same augmented images.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..config import AugmentCfg, PreprocessCfg


def fov_crop(image: torch.Tensor) -> torch.Tensor:
    """Crop to the bounding box of the fundus field of view.

    As FLAIR: Li threshold on the red channel, largest connected component. Returns the input
    unchanged when no clear foreground is found (e.g. an already-cropped image).
    """
    from skimage.filters import threshold_li
    from skimage.measure import label, regionprops

    red = image[0].numpy()
    if float(red.max()) - float(red.min()) < 1e-6:
        return image
    mask = red > threshold_li(red)
    labels = label(mask)
    if labels.max() == 0:
        return image
    largest = max(regionprops(labels), key=lambda r: r.area)
    top, left, bottom, right = largest.bbox
    if (bottom - top) < 8 or (right - left) < 8:
        return image
    return image[:, top:bottom, left:right]


def canvas_size(h: int, w: int, size: int) -> tuple:
    """The resized (height, width) of the FLAIR/KeepFIT canvas, computed exactly as the official code does.

    A square image goes straight to ``size``; otherwise ``s = max(h, w) / size`` and the target is
    ``(int(h / s), int(w / s))``: truncation, not rounding, so the shorter side (and, through floating
    point, occasionally the longer one) can be a pixel smaller than rounding gives. Released FLAIR/KeepFIT
    weights saw inputs made this way, so an imported model reproduces their outputs on non-square images.
    """
    if h == w:
        return size, size
    scale = max(h, w) / size
    return max(1, int(h / scale)), max(1, int(w / scale))


def resize_pad_to_square(image: torch.Tensor, size: int, antialias: bool = True,
                         interpolation: str = "bilinear") -> torch.Tensor:
    """Longer side to `size` keeping the aspect ratio (``canvas_size``), zero-pad right and bottom (content top-left)."""
    _, h, w = image.shape
    new_h, new_w = canvas_size(h, w, size)
    if (new_h, new_w) == (h, w) == (size, size):  # a prepared cache is already at the model's size
        return image
    resized = F.interpolate(image[None], size=(new_h, new_w), mode=interpolation, antialias=antialias,
                            align_corners=False if interpolation in ("bilinear", "bicubic") else None)[0]
    return F.pad(resized, (0, size - new_w, 0, size - new_h))


def crop_size(h: int, w: int, size: int, crop_pct: float) -> tuple:
    """(resized height, width) before the centre crop: the shorter side becomes ``int(size / crop_pct)`` (timm's
    rule) and the longer one is truncated, as torchvision's ``Resize(int)`` computes it."""
    short = int(size / crop_pct) if crop_pct < 1.0 else size
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """A size×size centre crop with torchvision's offsets (rounded half-differences)."""
    _, h, w = image.shape
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[:, top:top + size, left:left + size]


_PIL_FILTERS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST"}


def resize_pil(image: torch.Tensor, hw: tuple, interpolation: str) -> torch.Tensor:
    """Resize through Pillow on the 8-bit image (what torchvision's transforms do to a PIL image): official
    pipelines that resize PIL images differ from a tensor resize by more than a parity check tolerates."""
    from PIL import Image

    if tuple(image.shape[1:]) == tuple(hw):
        return image
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    resized = Image.fromarray(array).resize((hw[1], hw[0]), getattr(Image.Resampling, _PIL_FILTERS[interpolation]))
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def resize_to(image: torch.Tensor, hw: tuple, cfg: PreprocessCfg) -> torch.Tensor:
    """Resize to (height, width) with the model's backend, filter and antialiasing."""
    if cfg.resize_backend == "pil":
        return resize_pil(image, hw, cfg.interpolation)
    if tuple(image.shape[1:]) == tuple(hw):
        return image
    return F.interpolate(image[None], size=tuple(hw), mode=cfg.interpolation, antialias=cfg.antialias,
                         align_corners=False if cfg.interpolation in ("bilinear", "bicubic") else None)[0]


def resize_for_model(image: torch.Tensor, cfg: PreprocessCfg) -> torch.Tensor:
    """The model's resize step (``cfg.resize_mode``) to a size×size image."""
    _, h, w = image.shape
    if cfg.resize_mode == "pad":
        if cfg.resize_backend == "torch":
            return resize_pad_to_square(image, cfg.size, cfg.antialias, cfg.interpolation)
        new_h, new_w = canvas_size(h, w, cfg.size)
        resized = resize_to(image, (new_h, new_w), cfg)
        return F.pad(resized, (0, cfg.size - new_w, 0, cfg.size - new_h))
    if cfg.resize_mode == "squash":
        return resize_to(image, (cfg.size, cfg.size), cfg)
    return center_crop(resize_to(image, crop_size(h, w, cfg.size, cfg.crop_pct), cfg), cfg.size)


def augment(image: torch.Tensor, cfg: AugmentCfg, rng: np.random.Generator) -> torch.Tensor:
    """Flip / small affine / brightness-contrast jitter with FLAIR/KeepFIT's probabilities (see AugmentCfg)."""
    if rng.random() < cfg.hflip_p:
        image = TF.horizontal_flip(image)
    if rng.random() < cfg.affine_p:
        angle = float(rng.uniform(-cfg.degrees, cfg.degrees))
        scale = float(rng.uniform(cfg.scale_min, cfg.scale_max))
        image = TF.affine(image, angle=angle, translate=[0, 0], scale=scale, shear=[0.0, 0.0])
    if rng.random() < cfg.jitter_p:
        image = TF.adjust_brightness(image, float(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)))
        image = TF.adjust_contrast(image, float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)))
    return image.clamp_(0.0, 1.0)


class FundusTransform:
    """Callable ``(image 3×H×W in [0,1], rng=None) -> model input``, rebuilt from the model's PreprocessCfg."""

    def __init__(self, cfg: PreprocessCfg, train: bool = False, aug: Optional[AugmentCfg] = None):
        self.cfg = cfg
        self.train = train
        self.aug = aug or AugmentCfg()
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1) if cfg.mean else None
        self.std = torch.tensor(cfg.std).view(3, 1, 1) if cfg.std else None

    @property
    def draft_size(self) -> Optional[int]:
        """The reduced JPEG decode size that still gives this transform's output (``load_image(draft_size=)``):
        twice the model's size, so that the final antialiased resize sees enough pixels; none when the
        field-of-view crop must see the full image first."""
        if self.cfg.fov_crop or self.cfg.resize_backend == "pil":  # Pillow parity needs the full decode
            return None
        return 2 * self.cfg.size

    def __call__(self, image: torch.Tensor, rng: Optional[np.random.Generator] = None) -> torch.Tensor:
        cfg = self.cfg
        if cfg.fov_crop:
            image = fov_crop(image)
        image = resize_for_model(image, cfg)
        if self.train:
            image = augment(image, self.aug, rng if rng is not None else np.random.default_rng())
        if self.mean is not None:
            image = (image - self.mean) / self.std
        return image.contiguous()

    def __repr__(self) -> str:
        return f"FundusTransform(train={self.train}, {self.cfg})"


def build_transform(cfg: PreprocessCfg, train: bool = False, aug: Optional[AugmentCfg] = None) -> FundusTransform:
    return FundusTransform(cfg, train=train, aug=aug)
