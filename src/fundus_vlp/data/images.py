"""Image decoding that is correct for every mode fundus datasets ship, with errors that name file and row."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..constants import DEFAULT_MAX_IMAGE_PIXELS


class BadImageError(ValueError):
    """A missing, empty or undecodable image. ``where`` says which dataframe row referenced it."""

    def __init__(self, path: str | Path, reason: str, where: Optional[str] = None):
        self.path, self.reason, self.where = str(path), reason, where
        loc = f" ({where})" if where else ""
        super().__init__(f"{path}: {reason}{loc}")


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """HxWx3 float32 in [0, 1]."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0  # 16-bit PNG: keep the full range
    elif mode == "I":
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / (65535.0 if arr.max(initial=0) > 255 else 255.0)
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        peak = float(arr.max(initial=0))
        arr = arr / peak if peak > 1.0 else arr
    else:
        if mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        # RGBA/LA: converting drops the alpha channel (not red, as officially); CMYK/YCbCr/L/1: colour conversion.
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.clip(arr, 0.0, 1.0)


def check_file(path: str | Path, where: Optional[str] = None) -> Path:
    """Raise ``BadImageError`` unless ``path`` is a non-empty, readable regular file (no decoding)."""
    path = Path(path)
    try:
        st = path.stat()  # follows symlinks: a link to a dataset elsewhere is read where it points
    except FileNotFoundError:
        raise BadImageError(path, "file not found" if not path.is_symlink() else "broken symbolic link",
                            where) from None
    except OSError as exc:
        raise BadImageError(path, f"cannot access ({exc.strerror or exc})", where) from None
    if not path.is_file():
        raise BadImageError(path, "not a regular file (a folder?)", where)
    if st.st_size == 0:
        raise BadImageError(path, "empty file (0 bytes)", where)
    if not os.access(path, os.R_OK):
        raise BadImageError(path, "not readable (permission denied)", where)
    return path


def _check_pixels(img: Image.Image, path: Path, where: Optional[str], max_pixels: Optional[int]) -> None:
    limit = DEFAULT_MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    w, h = img.size
    if limit > 0 and w * h > limit:
        raise BadImageError(path, f"{w}x{h} = {w * h:,} pixels is over the limit of {limit:,} "
                                  "(data.max_image_pixels; a decompression bomb?)", where)


def open_image(path: str | Path, where: Optional[str] = None, max_pixels: Optional[int] = None) -> Image.Image:
    """Open (header only) with every failure as a ``BadImageError``; the caller closes the image."""
    path = check_file(path, where)
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise BadImageError(path, "not a recognised image format (corrupt?)", where) from None
    except Image.DecompressionBombError as exc:  # not an OSError: it would escape every `except OSError`
        raise BadImageError(path, f"over Pillow's pixel limit, a decompression bomb? ({exc})", where) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(path, f"corrupt or truncated image, header unreadable ({exc})", where) from None
    try:
        _check_pixels(img, path, where, max_pixels)
    except BadImageError:
        img.close()
        raise
    return img


def load_image(path: str | Path, where: Optional[str] = None, max_pixels: Optional[int] = None,
               draft_size: Optional[int] = None) -> torch.Tensor:
    """Decode an image file to a float32 tensor 3×H×W in [0, 1].

    ``draft_size``: JPEG files are decoded directly at 1/2, 1/4 or 1/8 scale (the decoder's DCT scaling,
    PIL ``Image.draft``) as long as both sides stay >= ``draft_size``; other formats ignore it. Callers
    that resize to ``S`` pass ``2 * S`` (see ``FundusTransform.draft_size``): the resized result then
    matches the full-size decode within a few 1/255 steps, at a fraction of the cost for large originals.
    Raises ``BadImageError`` for a missing, empty, truncated, over-sized (``max_pixels``, default
    ``DEFAULT_MAX_IMAGE_PIXELS``; 0 = no limit of ours) or otherwise undecodable file.
    """
    path = Path(path)
    try:
        with open_image(path, where, max_pixels) as img:
            if draft_size:
                img.draft(None, (draft_size, draft_size))
            img.load()  # force the full decode so truncated files fail here, not later
            arr = _to_rgb_array(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, BadImageError):
            raise
        raise BadImageError(path, f"corrupt or truncated image ({exc})", where) from None
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise BadImageError(path, f"image too small ({arr.shape[1]}x{arr.shape[0]})", where)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def verify_image(path: str | Path, where: Optional[str] = None, max_pixels: Optional[int] = None) -> tuple:
    """Check that an image decodes, cheaply; returns ``(width, height, mode)``.

    JPEGs are decoded at reduced scale (``Image.draft``: libjpeg still reads every compressed block, so a
    truncated or corrupt file still fails, but a 4000x3000 photo needs 1/64 of the memory); other formats
    are decoded fully in their own mode, without the float conversion of ``load_image``.
    """
    path = Path(path)
    try:
        with open_image(path, where, max_pixels) as img:
            size, mode = img.size, img.mode
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, BadImageError):
            raise
        raise BadImageError(path, f"corrupt or truncated image ({exc})", where) from None
    if size[0] < 2 or size[1] < 2:
        raise BadImageError(path, f"image too small ({size[0]}x{size[1]})", where)
    return size[0], size[1], mode


def image_from_array(array: np.ndarray) -> torch.Tensor:
    """An in-memory HxW or HxWxC array (uint8/uint16/float) -> 3×H×W float in [0, 1] (floats in [0, 1] kept)."""
    arr = np.asarray(array)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    else:
        arr = arr.astype(np.float32)
        if arr.max(initial=0) > 1.0:  # float data in 0..255
            arr = arr / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.shape[2] != 3:
        raise ValueError(f"expected 1, 3 or 4 channels, got {arr.shape[2]}")
    return torch.from_numpy(np.ascontiguousarray(np.clip(arr, 0, 1).transpose(2, 0, 1)))


def image_from_pil(img: Image.Image) -> torch.Tensor:
    """An in-memory PIL image -> 3×H×W float in [0, 1], decoded exactly as ``load_image`` decodes files."""
    return torch.from_numpy(np.ascontiguousarray(_to_rgb_array(img).transpose(2, 0, 1)))
