"""Colour and texture statistics of an image: what tells a fundus photograph from an angiogram, an OCT
B-scan, a line drawing or a table without any model.

Every statistic is computed on an RGB uint8 array shrunk to at most ``STATS_SIDE`` pixels a side, so the
cost does not grow with the resolution of the atlas scan.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

STATS_SIDE = 192
_DARK = 24  # value (0-255) below which a pixel is background (black surround of a fundus photograph)
_WHITE = 232  # value above which a pixel with little saturation counts as paper white


@dataclass(frozen=True)
class ImageStats:
    white_fraction: float  # paper-white pixels: drawings and tables are mostly white
    warm_fraction: float  # content pixels whose hue is red-orange-yellow (the colours of a fundus)
    greyness: float  # mean max channel difference of the content, 0-1 (0 = perfectly grey)
    layering: float  # vertical / (vertical + horizontal) gradient energy after smoothing: > 0.5 = horizontal layers
    ruled_lines: int  # runs of rows/columns that are almost all ink next to paper white: the rules of a table

    def to_dict(self) -> dict:
        return asdict(self)


def shrink(image: Image.Image, side: int = STATS_SIDE) -> np.ndarray:
    """RGB uint8 array of at most ``side`` pixels on the longer side."""
    img = image.convert("RGB")
    if max(img.size) > side:
        scale = side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _box_blur(grey: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur (integral image): removes OCT speckle before the gradient comparison."""
    if radius <= 0:
        return grey
    k = 2 * radius + 1
    padded = np.pad(grey, radius, mode="edge")
    c = np.cumsum(np.cumsum(padded, axis=0), axis=1)
    c = np.pad(c, ((1, 0), (1, 0)))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def _ruled_lines(ink: np.ndarray, white: np.ndarray) -> int:
    """Runs of rows/columns that are almost all ink with paper white on one side: table rules, not the black
    surround of a photograph (whose neighbouring rows are dark too)."""
    count = 0
    for axis in (1, 0):
        line = ink.mean(axis=axis) > 0.6
        paper = white.mean(axis=axis) > 0.5
        near_paper = np.zeros_like(paper)
        near_paper[2:] |= paper[:-2]
        near_paper[:-2] |= paper[2:]
        hits = line & near_paper
        count += int((hits[1:] & ~hits[:-1]).sum() + hits[0]) if hits.size else 0  # count runs, not rows
    return count


def image_stats(image: Image.Image) -> ImageStats:
    rgb = shrink(image).astype(np.float32)
    hsv = np.asarray(Image.fromarray(rgb.astype(np.uint8)).convert("HSV"), dtype=np.float32)
    h, s, v = hsv[..., 0], hsv[..., 1] / 255.0, hsv[..., 2]
    white = (v >= _WHITE) & (s < 0.12)
    dark = v < _DARK
    content = ~dark & ~white
    n_content = max(int(content.sum()), 1)
    spread = (rgb.max(axis=2) - rgb.min(axis=2)) / 255.0
    # warm hues: red through yellow (PIL hue is 0-255 for 0-360 degrees)
    warm = ((h <= 50) | (h >= 240)) & (s > 0.25)
    grey = rgb.mean(axis=2)
    smooth = _box_blur(grey, max(1, min(grey.shape) // 64))
    gy = float(np.abs(np.diff(smooth, axis=0)).mean()) if smooth.shape[0] > 1 else 0.0
    gx = float(np.abs(np.diff(smooth, axis=1)).mean()) if smooth.shape[1] > 1 else 0.0
    ruled = _ruled_lines(v < 110, white)
    return ImageStats(
        white_fraction=float(white.mean()),
        warm_fraction=float(warm[content].sum() / n_content),
        greyness=float(spread[content].sum() / n_content),
        layering=gy / (gx + gy) if gx + gy > 0 else 0.5,
        ruled_lines=ruled,
    )
