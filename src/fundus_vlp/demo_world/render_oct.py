"""OCT-like renderer: a horizontal B-scan through the fovea with layered reflectivity bands.

Rows are depth (top = vitreous), columns are the horizontal scan position. The retina is built upward from
the retinal pigment epithelium (RPE) as a stack of bands whose thicknesses vary with the distance to the
fovea (inner layers thin out in the foveal pit, the nuclear layer thickens). Findings deform the stack:
drusen lift the RPE, macular oedema thickens the retina and opens dark cysts, a macular hole removes the
full thickness at the fovea, retinitis pigmentosa erases the photoreceptor bands outside the centre,
pathologic myopia bends and thins the whole posterior wall.
"""
from __future__ import annotations

import numpy as np

from ._draw import finish, gaussian_blur, smooth_noise, smoothstep
from .scene import Case

__all__ = ["render_oct"]

# Bands from the RPE upward: (name, base thickness, foveal thinning factor, reflectivity). Thickness is a
# fraction of the image height; "foveal thinning" multiplies a Gaussian pit profile (negative = thickens).
_BANDS = (
    ("os", 0.012, 0.0, 0.34),
    ("ez", 0.010, 0.0, 0.85),
    ("is", 0.014, 0.0, 0.30),
    ("elm", 0.006, 0.0, 0.50),
    ("onl", 0.070, -0.45, 0.14),
    ("opl", 0.018, 0.5, 0.55),
    ("inl", 0.030, 0.85, 0.27),
    ("ipl", 0.030, 0.9, 0.55),
    ("gcl", 0.035, 0.95, 0.42),
    ("rnfl", 0.014, 0.9, 0.82),
)
_VITREOUS = 0.03


def render_oct(case: Case, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render an OCT-like B-scan; returns uint8 (S, S, 3) with equal channels."""
    s = size
    x = (np.arange(s, dtype=np.float32) + 0.5) / s
    y = ((np.arange(s, dtype=np.float32) + 0.5) / s)[:, None]  # (S, 1) depth
    xf = 0.5 + float(rng.normal(0, 0.04))
    nasal = 1.0 if case.eye == "right" else -1.0  # the disc side has a thicker nerve fibre layer
    pit = np.exp(-0.5 * ((x - xf) / 0.07) ** 2)
    f = case.findings

    staph = case.sev("staphyloma")
    # Concave posterior wall (edges higher than the fovea); a staphyloma deepens the bowl sharply.
    curv = rng.uniform(0.1, 0.25) + 1.1 * staph
    y_bm = rng.uniform(0.58, 0.64) + 0.06 * staph - curv * (x - xf) ** 2 + rng.normal(0, 0.04) * (x - 0.5)
    y_bm = y_bm + 0.006 * smooth_noise(rng, s, 6)[0]  # gentle undulation
    thin = 1.3 * (1.0 - 0.25 * staph)  # 1.3: bands a little thicker than life so they survive 96 px

    # Drusen: dome-shaped RPE elevations over sub-RPE material (Bruch's membrane stays in place).
    lift = np.zeros(s, np.float32)
    if "drusen" in f:
        n = max(3, f["drusen"]["count"] // 5)
        cx = xf + rng.uniform(-0.28, 0.28, n)
        amp = rng.uniform(0.015, 0.03 + 0.03 * f["drusen"]["severity"], n)
        w = rng.uniform(0.015, 0.035, n)
        lift = np.max(amp[:, None] * np.exp(-0.5 * ((x[None, :] - cx[:, None]) / w[:, None]) ** 2), axis=0)
    rpe_t = 0.02
    y_rpe_bot = y_bm - lift
    y_rpe_top = y_rpe_bot - rpe_t

    # Thickness profiles of the bands above the RPE.
    oedema = case.sev("macular_edema")
    rp = case.sev("outer_retinal_loss")
    periph = smoothstep(0.1, 0.16, np.abs(x - xf))  # RP spares the centre
    thick = {}
    for name, t, fov_thin, _ in _BANDS:
        prof = t * (1.0 - fov_thin * pit) * thin
        if name == "rnfl":
            prof = prof + 0.028 * np.clip(0.5 + nasal * (x - xf) * 2.0, 0, 1) * (1 - pit) * thin
        if name in ("inl", "onl") and oedema > 0:
            prof = prof + (0.02 + 0.05 * oedema) * np.exp(-0.5 * ((x - xf) / 0.14) ** 2)
        if name == "onl" and rp > 0:
            prof = prof * (1.0 - 0.6 * rp * periph)
        thick[name] = prof
    tops = {}
    cur = y_rpe_top
    for name, *_ in _BANDS:
        cur = cur - thick[name]
        tops[name] = cur
    y_ilm = cur

    # Layer map by thresholding depth against the boundaries (vectorised over all bands at once).
    img = np.full((s, s), _VITREOUS, np.float32)
    bottom = y_rpe_top
    for name, _, _, refl in _BANDS:
        top = tops[name]
        band = (y >= top) & (y < bottom)
        level = refl
        if rp > 0 and name in ("ez", "is", "os", "elm"):
            level = refl + (0.14 - refl) * rp * periph  # photoreceptor bands fade to ONL grey outside the centre
        img = np.where(band, level, img)
        bottom = top
    rpe_level = 1.0
    img = np.where((y >= y_rpe_top) & (y < y_rpe_bot), rpe_level, img)
    img = np.where((y >= y_rpe_bot) & (y < y_bm), 0.45, img)  # drusen material
    # Choroid (thin in myopia) with dark vessel lumens, then the sclera fading out.
    ch_t = rng.uniform(0.1, 0.14) * (1.0 - 0.75 * staph)
    chor = (y >= y_bm) & (y < y_bm + ch_t)
    lumens = smoothstep(0.3, 0.9, smooth_noise(rng, s, 22))
    img = np.where(chor, 0.5 - 0.35 * lumens, img)
    below = y >= y_bm + ch_t
    img = np.where(below, 0.22 * np.exp(-(y - y_bm - ch_t) / 0.08), img)

    if "macular_atrophy" in f:
        # RPE loss with hypertransmission: the choroid below brightens, the outer retina thins.
        xa = xf + rng.normal(0, 0.05)
        wa = 0.05 + 0.08 * f["macular_atrophy"]["severity"]
        zone = smoothstep(wa, wa - 0.01, np.abs(x - xa))
        rpe_band = (y >= y_rpe_top) & (y < y_bm + ch_t + 0.05)
        img = np.where(rpe_band, img + (0.75 - img) * 0.7 * zone * (y > y_rpe_bot), img)
        img = np.where((y >= y_rpe_top) & (y < y_rpe_bot), img * (1 - 0.6 * zone), img)

    yy, xx = np.meshgrid(y[:, 0], x, indexing="ij")
    if oedema > 0:
        # Dark intraretinal cysts in the inner nuclear and outer nuclear layers near the fovea.
        n = int(3 + 9 * oedema)
        cx = xf + rng.uniform(-0.18, 0.18, n)
        ci = np.clip(((cx) * s).astype(int), 0, s - 1)
        layer = rng.random(n) < 0.5
        cy = np.where(layer, (tops["inl"][ci] + tops["opl"][ci]) / 2, (tops["onl"][ci] + tops["elm"][ci]) / 2)
        rx = rng.uniform(0.02, 0.04, n) * (0.8 + 0.6 * oedema)
        ry = rng.uniform(0.012, 0.024, n) * (0.8 + 0.8 * oedema)
        d = (((xx[None] - cx[:, None, None]) / rx[:, None, None]) ** 2
             + ((yy[None] - cy[:, None, None]) / ry[:, None, None]) ** 2)
        cyst = smoothstep(1.0, 0.7, d.min(axis=0))
        img = img + (0.03 - img) * cyst
    if "hard_exudates" in f:
        # Hyperreflective foci in the outer plexiform layer.
        n = int(4 + 8 * f["hard_exudates"]["severity"])
        cx = xf + rng.uniform(-0.25, 0.25, n)
        ci = np.clip((cx * s).astype(int), 0, s - 1)
        cy = tops["opl"][ci] + thick["opl"][ci] * 0.5
        d = ((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2) / 0.008 ** 2
        img = np.maximum(img, 0.95 * smoothstep(1.0, 0.3, d.min(axis=0)))
    if "foveal_defect" in f:
        # Full-thickness hole: a gap from the vitreous down to the RPE, wider at its base, with cystic edges.
        sev = f["foveal_defect"]["severity"]
        w_base = 0.05 + 0.05 * sev
        w_top = w_base * 0.55
        depth = np.clip((yy - y_ilm[None, :].min()) / (y_rpe_top.min() - y_ilm.min() + 1e-6), 0, 1)
        half = w_top + (w_base - w_top) * depth
        gap = (np.abs(xx - xf) < half) & (yy < y_rpe_top[None, :]) & (yy > y_ilm.min() - 0.05)
        img = np.where(gap, _VITREOUS, img)
        for side in (-1, 1):
            ex = xf + side * (w_base + 0.025)
            ei = int(np.clip(ex * s, 0, s - 1))
            ey = (tops["inl"][ei] + tops["elm"][ei]) / 2
            d = ((xx - ex) / 0.022) ** 2 + ((yy - ey) / (0.02 + 0.015 * sev)) ** 2
            img = img + (0.03 - img) * smoothstep(1.0, 0.6, d)

    # Speckle, slight lateral blur, exposure, noise floor.
    speckle = 1.0 + 0.45 * rng.standard_normal((s, s), dtype=np.float32)
    img = np.clip(img * speckle, 0, None)
    img = gaussian_blur(img, rng.uniform(0.5, 0.9) * s / 128.0)
    img = (img * rng.uniform(0.85, 1.1)) ** 0.85
    out = finish(img.astype(np.float32), rng, rng.uniform(0.01, 0.025), rng.uniform(0.95, 1.05))
    return np.repeat(out[..., None], 3, axis=2)
