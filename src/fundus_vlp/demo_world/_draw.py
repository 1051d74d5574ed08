"""Vectorised numpy drawing primitives shared by the renderers (no PIL/skimage in the hot path).

Conventions: images are float32 arrays in [0, 1], shape (S, S) or (S, S, C). Pixel coordinates put the centre
of pixel (row i, column j) at (x=j, y=i). *Normalised* coordinates map the canvas to [-1, 1] on both axes
(x to the right, y down), so one normalised unit is S/2 pixels and shapes scale with the image size.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "norm_grid",
    "to_px",
    "stamp",
    "stamp_soft",
    "paint",
    "gaussian_blur",
    "smooth_noise",
    "lerp",
    "smoothstep",
    "finish",
]


@lru_cache(maxsize=8)
def norm_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (x, y) coordinates of pixel centres, each (S, S) float32, read-only."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def to_px(v: np.ndarray | float, size: int) -> np.ndarray | float:
    """Normalised coordinate -> pixel coordinate (inverse of :func:`norm_grid`)."""
    return (np.asarray(v) + 1.0) * (size / 2.0) - 0.5


@lru_cache(maxsize=16)
def _offsets(k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.arange(-k, k + 1, dtype=np.int64)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    return dx.ravel(), dy.ravel()


def _splat(canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, radii: np.ndarray, values: np.ndarray,
           soft: bool) -> None:
    h, w = canvas.shape
    flat = canvas.reshape(-1)
    # Bucket by window size so thin vessels do not pay for the widest blob's window. A half-width of
    # ceil(r + 0.5) covers the disc and all but the faintest anti-aliasing fringe.
    ks = np.ceil(radii + (0.2 if soft else 0.5)).astype(np.int64)
    for k in np.unique(ks):
        sel = ks == k
        x = xs[sel].astype(np.float32)
        y = ys[sel].astype(np.float32)
        rr = radii[sel].astype(np.float32)[:, None]
        v = values[sel].astype(np.float32)[:, None]
        dx, dy = _offsets(int(k))
        ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
        cx = ix[:, None] + dx[None, :]
        cy = iy[:, None] + dy[None, :]
        # Everything float32: a float64 `a` would push np.maximum.at onto its slow casting path (~20x slower).
        fx = (ix.astype(np.float32) - x)[:, None] + dx[None, :].astype(np.float32)
        fy = (iy.astype(np.float32) - y)[:, None] + dy[None, :].astype(np.float32)
        if soft:
            a = np.clip(1.0 - (fx * fx + fy * fy) / np.maximum(rr * rr, 1e-6), 0.0, 1.0) ** 1.5
        else:
            a = np.clip(rr + 0.5 - np.sqrt(fx * fx + fy * fy), 0.0, 1.0)  # anti-aliased hard edge
        a *= v
        a = a.astype(flat.dtype, copy=False)
        # Out-of-canvas taps get alpha 0 and a clamped index: max(canvas, 0) is a no-op (canvas >= 0), which
        # is much cheaper than boolean-mask indexing of every array.
        a *= (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
        np.maximum.at(flat, (np.clip(cy, 0, h - 1) * w + np.clip(cx, 0, w - 1)).ravel(), a.ravel())


def stamp(canvas: np.ndarray, xs, ys, radii, values=1.0, *, soft: bool = False) -> np.ndarray:
    """Max-composite anti-aliased discs (pixel coordinates and radii) into a 2-D ``canvas`` in place;
    ``soft``: a smooth radial falloff instead of a hard edge."""
    xs = np.atleast_1d(np.asarray(xs, dtype=np.float64))
    ys = np.atleast_1d(np.asarray(ys, dtype=np.float64))
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), xs.shape)
    values = np.broadcast_to(np.asarray(values, dtype=np.float64), xs.shape)
    if xs.size:
        _splat(canvas, xs, ys, radii, values, soft=soft)
    return canvas


def stamp_soft(canvas: np.ndarray, xs, ys, radii, values=1.0) -> np.ndarray:
    """Soft discs (fluffy lesions, leakage): :func:`stamp` with ``soft=True``."""
    return stamp(canvas, xs, ys, radii, values, soft=True)


def paint(img: np.ndarray, masks: dict, name: str, colour, strength: float) -> np.ndarray:
    """Blend ``colour`` into ``img`` where finding ``name`` has a mask (no-op when the scene lacks it)."""
    m = masks.get(name)
    return img if m is None else lerp(img, colour, m * strength)


def gaussian_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur over the two image axes (channels untouched), border pixels replicated.

    Uses ``scipy.ndimage`` rather than matrix products: on tiny images a multi-threaded BLAS spends far more
    CPU spinning its threads than computing (6x the total render cost on 2 busy cores).
    """
    if sigma_px < 0.15:
        return img
    sigma = (sigma_px, sigma_px) + (0.0,) * (img.ndim - 2)
    return _ndimage().gaussian_filter(img, sigma, mode="nearest", truncate=3.0)


@lru_cache(maxsize=1)
def _ndimage():
    from scipy import ndimage  # scipy comes with scikit-image / scikit-learn; imported lazily

    return ndimage


@lru_cache(maxsize=16)
def _interp_index(size: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    # Bilinear interpolation from (cells+1) knots to `size` samples: left knot index and weight of the right one.
    t = (np.arange(size) + 0.5) / size * cells
    i0 = np.clip(np.floor(t).astype(np.int64), 0, cells - 1)
    return i0, (t - i0).astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean smooth noise (bilinear-upsampled random knots), roughly unit standard deviation.

    Gathers instead of matrix products, for the same reason as :func:`gaussian_blur`.
    """
    knots = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    i, f = _interp_index(size, cells)
    rows = knots[i] * (1 - f)[:, None] + knots[i + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def lerp(img: np.ndarray, colour, alpha: np.ndarray) -> np.ndarray:
    """Alpha-blend a constant colour (or image) over ``img``; alpha is (S, S)."""
    a = alpha[..., None] if img.ndim == 3 else alpha
    return img + (np.asarray(colour, dtype=np.float32) - img) * a


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@lru_cache(maxsize=64)
def _gamma_lut(gamma_q: int) -> np.ndarray:
    g = gamma_q / 100.0
    return ((np.arange(256) / 255.0) ** g * 255.0 + 0.5).astype(np.uint8)


def finish(img: np.ndarray, rng: np.random.Generator, noise_std: float, gamma: float,
           fov: np.ndarray | None = None) -> np.ndarray:
    """Sensor noise, field-of-view mask, 8-bit quantisation and a gamma curve (applied as a cached LUT).

    Noise is luminance-only (one draw per pixel, shared by the channels) to keep it cheap.
    """
    noise = rng.standard_normal(img.shape[:2], dtype=np.float32) * np.float32(noise_std)
    img = img + (noise[..., None] if img.ndim == 3 else noise)
    if fov is not None:
        img = img * (fov[..., None] if img.ndim == 3 else fov)
    q = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return _gamma_lut(int(round(gamma * 100)))[q]
