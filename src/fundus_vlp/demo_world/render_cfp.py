"""Colour fundus photograph (CFP) renderer: colours a :class:`~.fundus.FundusScene`.

Order of layers (back to front): orange-red choroidal background with texture, tessellation, atrophy, the
dark macula, optic disc and cup, veins and arteries, lesions; then lens haze and per-image nuisance
(illumination, hue, gamma, blur, sensor noise) and the black outside of the field of view.
"""
from __future__ import annotations

import numpy as np

from ._draw import finish, gaussian_blur, lerp, norm_grid, paint, smooth_noise
from .fundus import FundusScene, build_scene
from .scene import Case

__all__ = ["render_cfp", "colour_cfp"]

# Albedo colours (linear-ish RGB in [0, 1]) chosen to read clearly against the orange-red background.
_BG = np.array([0.80, 0.36, 0.16], np.float32)
_VEIN = np.array([0.40, 0.06, 0.05], np.float32)
_ARTERY = np.array([0.68, 0.16, 0.09], np.float32)
_DISC = np.array([0.96, 0.62, 0.40], np.float32)
_CUP = np.array([1.00, 0.96, 0.86], np.float32)
_PALE_DISC = np.array([1.00, 0.92, 0.68], np.float32)
_RED_LESION = np.array([0.40, 0.03, 0.03], np.float32)
_FLAME = np.array([0.55, 0.05, 0.04], np.float32)
_EXUDATE = np.array([1.00, 0.92, 0.42], np.float32)
_COTTON = np.array([0.97, 0.92, 0.85], np.float32)
_DRUSEN = np.array([0.98, 0.85, 0.45], np.float32)
_PIGMENT = np.array([0.18, 0.10, 0.06], np.float32)
_ATROPHY = np.array([0.96, 0.86, 0.66], np.float32)
_TESS_DARK = np.array([0.38, 0.14, 0.07], np.float32)
_HOLE = np.array([0.62, 0.10, 0.07], np.float32)
_CUFF = np.array([0.78, 0.58, 0.48], np.float32)
_HAZE = np.array([0.80, 0.72, 0.58], np.float32)


# (mask name, colour, opacity), painted back to front after the vessels.
_LESION_LAYERS = (
    ("drusen", _DRUSEN, 0.85),
    ("hard_exudates", _EXUDATE, 1.0),
    ("cotton_wool_spots", _COTTON, 0.9),
    ("pigment_clumps", _PIGMENT, 0.85),
    ("bone_spicules", _PIGMENT * 0.8, 0.92),
    ("microaneurysms", _RED_LESION, 0.95),
    ("haemorrhages", _RED_LESION, 0.92),
    ("flame_haemorrhages", _FLAME, 0.9),
    ("foveal_cuff", _CUFF, 0.55),
    ("foveal_defect", _HOLE, 1.0),
    ("foveal_dots", _EXUDATE, 0.6),
)


def colour_cfp(case: Case, sc: FundusScene, rng: np.random.Generator) -> np.ndarray:
    """Colour the scene; returns uint8 (S, S, 3)."""
    s = sc.size
    xx, yy = norm_grid(s)
    # Background albedo: pigmentation varies between people (darker / lighter / more orange fundi).
    pig = rng.uniform(0.85, 1.12)
    bg = _BG * np.array([pig, pig ** 1.5, pig ** 2], np.float32)
    tex = 1.0 + 0.05 * smooth_noise(rng, s, 10) + 0.025 * smooth_noise(rng, s, 24)
    img = np.broadcast_to(bg, (s, s, 3)) * tex[..., None]
    if "tessellation" in case.findings:
        img = paint(img * 1.05, sc.masks, "tessellation", _TESS_DARK, 0.7)
    img = paint(img, sc.masks, "macular_atrophy", _ATROPHY, 0.9)
    img = paint(img, sc.masks, "peripapillary_atrophy", _ATROPHY, 0.85)
    # Macula: a darker, browner region with a darker foveal centre.
    mac = np.exp(-0.5 * (sc.d_fovea / 0.14) ** 2) * 0.32 + np.exp(-0.5 * (sc.d_fovea / 0.035) ** 2) * 0.15
    img = img * (1.0 - mac[..., None] * np.array([0.9, 1.0, 0.8], np.float32))
    # Optic disc: orange-pink rim around a white-yellow cup (RP: waxy pale disc, cup barely visible).
    pallor = case.sev("disc_pallor")
    rim = _DISC * (1 - pallor) + _PALE_DISC * pallor
    img = lerp(img, rim, sc.disc_alpha)
    img = lerp(img, _CUP, sc.cup_alpha * (0.95 - 0.6 * pallor))
    # Vessels (veins first so arteries cross over them).
    # Vessels fade over the disc and dive into the cup, so the cup outline stays readable.
    on_disc = 1.0 - 0.3 * sc.disc_alpha - 0.55 * sc.cup_alpha
    img = lerp(img, _VEIN, sc.vein * (0.88 * on_disc))
    img = lerp(img, _ARTERY, sc.artery * (0.8 * on_disc))
    # Lesions.
    for name, colour, strength in _LESION_LAYERS:
        img = paint(img, sc.masks, name, colour, strength)

    # Illumination: radial fall-off, a slightly off-centre flash, global exposure.
    fx, fy = (float(v) for v in rng.normal(0, 0.12, 2))  # python floats keep the maps float32 (NEP 50)
    r2 = (xx - fx) ** 2 + (yy - fy) ** 2
    illum = (1.0 - 0.42 * r2 / sc.fov_r ** 2) * rng.uniform(0.85, 1.12)
    img = img * illum[..., None]

    px = s / 128.0  # blur sizes are defined at 128 px and scaled
    haze = case.sev("lens_haze")
    if haze > 0:
        # Cataract: strong low-pass + a yellow-grey veil; vessels and disc margins wash out.
        img = gaussian_blur(img, (1.6 + 1.6 * haze) * px)
        img = lerp(img, _HAZE * illum.mean(), np.full((s, s), 0.28 + 0.22 * haze, np.float32))
    if case.quality == "poor":
        img = img * rng.uniform(0.55, 0.7)

    # Camera nuisance: white balance, slight defocus, then sensor noise, gamma and quantisation.
    img = img * rng.uniform([0.94, 0.9, 0.85], [1.06, 1.1, 1.15]).astype(np.float32)
    img = gaussian_blur(img, rng.uniform(0.0, 0.6) * px)
    noise = 0.04 if case.quality == "poor" else rng.uniform(0.006, 0.018)
    return finish(img, rng, noise, rng.uniform(0.9, 1.1), sc.fov)


def render_cfp(case: Case, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render a colour fundus photograph; returns uint8 (S, S, 3)."""
    return colour_cfp(case, build_scene(case, size, rng), rng)
