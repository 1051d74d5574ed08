"""Fluorescein-angiography-like (FFA) renderer: a grey-scale colouring of the same fundus scene.

In a mid-phase angiogram the dye-filled vessels are bright, the choroid gives a mottled grey flush, the
foveal avascular zone is dark. Findings change the picture as on real angiograms: microaneurysms and drusen
light up (hyperfluorescent dots), haemorrhages, pigment and cotton-wool spots block the dye (dark),
non-perfused capillary beds are dark with pruned vessels, oedema and new vessels leak (fuzzy bright),
atrophy and holes show as bright window defects.
"""
from __future__ import annotations

import numpy as np

from ._draw import finish, gaussian_blur, lerp, norm_grid, paint, smooth_noise
from .fundus import FundusScene, build_scene
from .scene import Case

__all__ = ["render_ffa", "colour_ffa"]

# (mask, grey level, opacity), painted back to front after the vessels.
_LAYERS = (
    ("drusen", 0.78, 0.8),
    ("pigment_clumps", 0.06, 0.8),
    ("bone_spicules", 0.05, 0.9),
    ("cotton_wool_spots", 0.1, 0.75),
    ("microaneurysms", 1.0, 1.0),
    ("haemorrhages", 0.05, 0.9),
    ("flame_haemorrhages", 0.06, 0.85),
    ("foveal_defect", 0.88, 1.0),
)


def colour_ffa(case: Case, sc: FundusScene, rng: np.random.Generator) -> np.ndarray:
    """Colour the scene as an angiogram; returns uint8 (S, S, 3) with equal channels."""
    s = sc.size
    xx, yy = norm_grid(s)
    flush = rng.uniform(0.24, 0.34)
    img = flush * (1.0 + 0.12 * smooth_noise(rng, s, 14) + 0.06 * smooth_noise(rng, s, 30))
    # Window defects: atrophy lets the bright choroidal flush (and its large vessels) show through.
    atrophy = np.maximum(sc.mask("macular_atrophy"), sc.mask("peripapillary_atrophy"))
    if atrophy.any():
        img = lerp(img, 0.72 + 0.12 * smooth_noise(rng, s, 20), atrophy * 0.9)
    if case.has("bone_spicules"):
        # Retinitis pigmentosa: mottled mid-peripheral window defects.
        ring = np.clip((sc.d_fovea - 0.4) / 0.3, 0, 1)
        img = img + ring * (0.18 + 0.1 * smooth_noise(rng, s, 24))
    # Dark foveal avascular zone; the disc stains moderately.
    img = img * (1.0 - 0.75 * np.exp(-0.5 * (sc.d_fovea / 0.09) ** 2))
    img = lerp(img, 0.58, sc.disc_alpha)
    img = lerp(img, 0.75, sc.cup_alpha * 0.8)
    # Capillary non-perfusion: dark grey with pruned vessels.
    nonperf = sc.mask("non_perfusion")
    img = lerp(img, 0.08, nonperf * 0.85)
    vessels = np.maximum(sc.vein * 0.92, sc.artery) * (1.0 - 0.8 * nonperf)
    img = lerp(img, 0.9, vessels * 0.92)
    for name, level, strength in _LAYERS:
        img = paint(img, sc.masks, name, level, strength)
    # Leakage: diffuse, fuzzy hyperfluorescence (macular oedema; severe disease also leaks at the arcades).
    leak = sc.mask("macular_edema")
    if leak.any():
        leak = gaussian_blur(leak, 2.0 * s / 128.0)
        img = np.maximum(img, leak * rng.uniform(0.85, 1.0))
    # Illumination fall-off, exposure, slight blur; angiograms are noisier than colour photographs.
    fx, fy = (float(v) for v in rng.normal(0, 0.1, 2))
    illum = (1.0 - 0.35 * ((xx - fx) ** 2 + (yy - fy) ** 2) / sc.fov_r ** 2) * rng.uniform(0.85, 1.15)
    img = gaussian_blur(img * illum, rng.uniform(0.2, 0.7) * s / 128.0)
    img = finish(img, rng, rng.uniform(0.015, 0.03), rng.uniform(0.9, 1.1), sc.fov)
    return np.repeat(img[..., None], 3, axis=2)


def render_ffa(case: Case, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render an FFA-like image; returns uint8 (S, S, 3)."""
    return colour_ffa(case, build_scene(case, size, rng), rng)
