"""Modality-independent fundus geometry: field of view, optic disc, macula, vessel tree and lesion masks.

:func:`build_scene` turns a :class:`~.scene.Case` into a :class:`FundusScene`, a set of alpha maps (one per
structure or lesion type). The CFP and FFA renderers only differ in how they colour those maps, so the
same case rendered in both modalities has the same anatomy.

Sizes are in normalised units (the canvas spans [-1, 1]); the comments give the pixel size at 96 px, the
smallest input the demo models use, to show that every finding stays visible there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._draw import norm_grid, smooth_noise, smoothstep, stamp, stamp_soft, to_px
from .scene import Case

__all__ = ["FundusScene", "build_scene"]


@dataclass
class FundusScene:
    """Alpha maps (S, S) in [0, 1] and geometry of one fundus image (normalised coordinates)."""

    size: int
    side: int  # +1: right eye (disc on the image's right), -1: left eye
    fovea: np.ndarray
    disc: np.ndarray
    disc_r: float
    fov_c: np.ndarray
    fov_r: float
    fov: np.ndarray
    d_fovea: np.ndarray
    disc_alpha: np.ndarray
    cup_alpha: np.ndarray
    artery: np.ndarray
    vein: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    main_paths: list[np.ndarray] = field(default_factory=list)  # (n, 3) x, y, heading of the large vessels

    def mask(self, name: str) -> np.ndarray:
        """Mask ``name`` or an all-zero map (so colourisers need not test for presence)."""
        m = self.masks.get(name)
        if m is None:
            m = np.zeros((self.size, self.size), dtype=np.float32)
        return m


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


# ------------------------------------------------------------------------------------------------- vessels
def _paths(rng: np.random.Generator, start: np.ndarray, theta0: np.ndarray, kappa: np.ndarray, length: np.ndarray,
           ds: float, tort_amp: float, tort_wl: float) -> tuple[np.ndarray, ...]:
    """A batch of smooth random centre lines (one per row), all generated at once.

    heading(s) = theta0 + curvature * s + random walk + tortuosity wave. Returns x, y, heading (m, n), arc
    length s (n,) and a validity mask (m, n) (rows are padded to the longest path).
    """
    m = len(theta0)
    n = max(3, int(length.max() / ds))
    s = np.arange(n) * ds
    walk = np.cumsum(rng.standard_normal((m, n)), axis=1) * (0.45 * np.sqrt(ds))
    phase = rng.uniform(0, 2 * np.pi, (m, 1))
    theta = theta0[:, None] + kappa[:, None] * s + walk + tort_amp * np.sin(2 * np.pi * s / tort_wl + phase)
    x = start[:, 0:1] + np.cumsum(np.cos(theta), axis=1) * ds
    y = start[:, 1:2] + np.cumsum(np.sin(theta), axis=1) * ds
    return x, y, theta, s, s[None, :] < length[:, None]


def _children(rng: np.random.Generator, parent: tuple[np.ndarray, ...], counts: np.ndarray, width: np.ndarray,
              lo: float, hi: float) -> tuple[np.ndarray, ...]:
    """Branch start points/headings/widths: ``counts[i]`` children at random fractions of parent i's length."""
    x, y, th, s, valid = parent
    idx = np.repeat(np.arange(len(counts)), counts)
    nvalid = valid.sum(axis=1)[idx]
    j = (rng.uniform(lo, hi, len(idx)) * nvalid).astype(int)
    start = np.column_stack([x[idx, j], y[idx, j]])
    turn = rng.choice([-1.0, 1.0], len(idx)) * rng.uniform(0.45, 1.0, len(idx))
    w = width[idx] * (1 - 0.45 * j / np.maximum(nvalid, 1))
    return idx, start, th[idx, j] + turn, w


def _vessel_tree(case: Case, rng: np.random.Generator, size: int, disc: np.ndarray, side: int, rot: float):
    """Arteries and veins: four arcades (artery + vein pairs), branches and sub-branches.

    Returns {"artery"|"vein": (n, 3) points x, y, radius} and the main vessel paths (x, y, heading).
    """
    ds = 1.5 / size  # 0.75 px between stamps: continuous lines, few points
    narrow = case.sev("arteriolar_narrowing")
    tort = case.sev("vessel_tortuosity")
    beading = case.sev("venous_beading")
    # Normal vessels are almost straight; hypertensive ones get a visible ~1.5 px corkscrew wave at 96 px.
    tort_amp, tort_wl = 0.12 + 0.95 * tort, 0.17
    art_scale = 1.0 - 0.55 * narrow
    vein_scale = 1.0 - (0.3 * narrow if case.has("disc_pallor") else 0.0)  # RP narrows veins too
    # Canonical frame: right eye, superior half (y up is negative). Temporal arcades curve around the macula.
    # Columns: is_vein, theta0, curvature, length, radius (0.026 ~ 1.25 px radius at 96 px).
    # Trunks leave the disc almost vertically, then the temporal arcade bends round the macula and the nasal
    # branch fans out, as in real fundi.
    base = np.array([
        [1, -1.80, -1.55, 1.35, 0.026], [1, -1.25, 0.55, 0.85, 0.021],
        [0, -1.92, -1.65, 1.30, 0.019], [0, -1.35, 0.6, 0.80, 0.016],
    ])
    spec = np.concatenate([base, base])  # superior copies, then inferior copies
    vert = np.repeat([-1.0, 1.0], len(base))
    m = len(spec)
    is_vein = spec[:, 0] > 0
    radius = spec[:, 4] * np.where(is_vein, vein_scale, art_scale)
    start = rng.normal(0, 0.015, (m, 2))  # vessels emerge spread over the cup, not from one point
    lvl0 = _paths(rng, start, spec[:, 1] + rng.normal(0, 0.1, m), spec[:, 2] * rng.uniform(0.8, 1.2, m),
                  spec[:, 3] * rng.uniform(0.9, 1.1, m), ds, tort_amp, tort_wl)
    i1, st1, th1, w1 = _children(rng, lvl0, rng.integers(3, 6, m), radius, 0.12, 0.85)
    w1 = w1 * rng.uniform(0.62, 0.75, len(i1))
    lvl1 = _paths(rng, st1, th1, rng.uniform(-0.8, 0.8, len(i1)), rng.uniform(0.22, 0.55, len(i1)), ds,
                  tort_amp, tort_wl)
    i2, st2, th2, w2 = _children(rng, lvl1, rng.integers(0, 3, len(i1)), w1, 0.2, 0.8)
    w2 = w2 * 0.7
    lvl2 = _paths(rng, st2, th2, rng.uniform(-1, 1, len(i2)), rng.uniform(0.1, 0.28, len(i2)), ds, tort_amp, tort_wl)

    R = _rot(rot)
    out: dict[str, list[np.ndarray]] = {"artery": [], "vein": []}
    main_paths: list[np.ndarray] = []
    owners = [np.arange(m), i1, i1[i2]]  # which main vessel each path descends from
    for level, (paths, width, owner) in enumerate(zip((lvl0, lvl1, lvl2), (radius, w1, w2), owners)):
        x, y, th, s, valid = paths
        vsign = vert[owner][:, None]
        xy = np.stack([x * side, y * vsign], axis=-1) @ R.T + disc  # (k, n, 2)
        length = np.maximum(valid.sum(axis=1, keepdims=True) * ds, 1e-6)
        r = width[:, None] * (1.0 - 0.45 * s[None, :] / length)
        vein_rows = is_vein[owner]
        if beading > 0:
            # Beading: venous calibre swells and narrows with a ~0.07 period away from the disc.
            bead = 1.0 + 0.55 * beading * np.sin(2 * np.pi * s / 0.07) * (s > 0.1)
            r = np.where(vein_rows[:, None], r * bead[None, :], r)
        for kind, rows in (("vein", vein_rows), ("artery", ~vein_rows)):
            sel = valid & rows[:, None]
            out[kind].append(np.column_stack([xy[sel], r[sel]]))
        if level == 0:
            heading = np.arctan2(np.gradient(xy[..., 1], axis=1), np.gradient(xy[..., 0], axis=1))
            for k in range(m):
                main_paths.append(np.column_stack([xy[k][valid[k]], heading[k][valid[k]]]))
    return {k: np.concatenate(v) for k, v in out.items()}, main_paths


# ------------------------------------------------------------------------------------------------- helpers
def _sample_points(rng: np.random.Generator, n: int, centre: np.ndarray, rmin: float, rmax: float,
                   sc: "FundusScene", avoid_disc: float = 1.6, margin: float = 0.08,
                   quadrant_balanced: bool = False) -> np.ndarray:
    """``n`` points in an annulus around ``centre`` inside the field of view and away from the disc."""
    if n <= 0:
        return np.zeros((0, 2))
    out = []
    for _ in range(8):  # vectorised rejection sampling; 8 rounds are plenty for these regions
        m = 6 * n
        if quadrant_balanced:
            ang = (np.arange(m) % 4 + rng.uniform(0.1, 0.9, m)) * (np.pi / 2) + np.pi / 4
        else:
            ang = rng.uniform(0, 2 * np.pi, m)
        r = np.sqrt(rng.uniform(rmin ** 2, rmax ** 2, m))
        p = centre + np.column_stack([np.cos(ang) * r, np.sin(ang) * r])
        ok = (np.hypot(*(p - sc.fov_c).T) < sc.fov_r - margin) & (np.hypot(*(p - sc.disc).T) > avoid_disc * sc.disc_r)
        out.append(p[ok])
        if sum(len(o) for o in out) >= n:
            break
    pts = np.concatenate(out)
    if len(pts) < n:  # degenerate layout: fall back to the centre region
        pts = np.concatenate([pts, centre + rng.normal(0, 0.05, (n - len(pts), 2))])
    return pts[:n]


def _path_points(rng: np.random.Generator, sc: "FundusScene", n: int, dmin: float, dmax: float) -> np.ndarray:
    """``n`` (x, y, heading) samples on the large vessels at a distance in [dmin, dmax] from the disc."""
    allp = np.concatenate(sc.main_paths)
    d = np.hypot(allp[:, 0] - sc.disc[0], allp[:, 1] - sc.disc[1])
    inside = np.hypot(allp[:, 0] - sc.fov_c[0], allp[:, 1] - sc.fov_c[1]) < sc.fov_r - 0.1
    cand = allp[(d > dmin) & (d < dmax) & inside]
    if len(cand) == 0:
        cand = allp
    return cand[rng.integers(0, len(cand), n)]


def _px(sc: "FundusScene", pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return to_px(pts[:, 0], sc.size), to_px(pts[:, 1], sc.size)


def _r(sc: "FundusScene", r) -> np.ndarray:
    return np.asarray(r) * sc.size / 2


def _new(sc: "FundusScene") -> np.ndarray:
    return np.zeros((sc.size, sc.size), dtype=np.float32)


# ------------------------------------------------------------------------------------------------- lesions
def _draw_lesions(case: Case, sc: FundusScene, rng: np.random.Generator) -> None:
    xx, yy = norm_grid(sc.size)
    f = case.findings
    masks = sc.masks
    temporal = np.array([-sc.side, 0.0])

    if "microaneurysms" in f:
        # radius 0.024 -> ~1.2 px at 96 px (a >= 2 px dot); kept within the posterior pole.
        p = _sample_points(rng, f["microaneurysms"]["count"], sc.fovea, 0.08, 0.55, sc)
        masks["microaneurysms"] = stamp(_new(sc), *_px(sc, p), _r(sc, rng.uniform(0.022, 0.028, len(p))))
    if "haemorrhages" in f:
        n = f["haemorrhages"]["count"]
        wide = f["haemorrhages"]["severity"] >= 0.6  # severe: all four quadrants
        p = _sample_points(rng, n, sc.fovea, 0.12, 0.8 if wide else 0.5, sc, quadrant_balanced=wide)
        r = rng.uniform(0.04, 0.075, n)  # 2-3.6 px radius at 96 px
        sat = p + rng.normal(0, 1, (n, 2)) * r[:, None] * 0.6
        m = stamp(_new(sc), *_px(sc, p), _r(sc, r))
        masks["haemorrhages"] = stamp(m, *_px(sc, sat), _r(sc, r * rng.uniform(0.45, 0.7, n)))
    if "flame_haemorrhages" in f:
        q = _path_points(rng, sc, f["flame_haemorrhages"]["count"], 0.15, 0.5)
        t = np.linspace(-0.5, 0.5, 9)
        xs = q[:, 0:1] + np.cos(q[:, 2:3]) * t * 0.13 + np.cos(q[:, 2:3] + np.pi / 2) * 0.025
        ys = q[:, 1:2] + np.sin(q[:, 2:3]) * t * 0.13 + np.sin(q[:, 2:3] + np.pi / 2) * 0.025
        rad = np.broadcast_to(0.026 * (1.0 - 0.6 * np.abs(t) * 2) + 0.008, xs.shape)
        masks["flame_haemorrhages"] = stamp_soft(_new(sc), *_px(sc, np.column_stack([xs.ravel(), ys.ravel()])),
                                                 _r(sc, rad.ravel() * 1.3))
    if "hard_exudates" in f:
        e = f["hard_exudates"]
        pts = []
        for _ in range(e["clusters"]):
            c = sc.fovea + temporal * rng.uniform(-0.1, 0.2) + rng.normal(0, 0.12, 2)
            k = e["per_cluster"]
            if e["ring"]:  # circinate ring around a leaking centre
                a = rng.uniform(0, 2 * np.pi, k)
                rr = rng.uniform(0.07, 0.1) * rng.uniform(0.85, 1.15, k)
                pts.append(c + np.column_stack([np.cos(a) * rr, np.sin(a) * rr]))
            else:
                pts.append(c + rng.normal(0, 0.045, (k, 2)))
        p = np.concatenate(pts)
        masks["hard_exudates"] = stamp(_new(sc), *_px(sc, p), _r(sc, rng.uniform(0.014, 0.026, len(p))))
    if "cotton_wool_spots" in f:
        n = f["cotton_wool_spots"]["count"]
        q = _path_points(rng, sc, n, 0.2, 0.7)
        off = np.column_stack([np.cos(q[:, 2] + np.pi / 2), np.sin(q[:, 2] + np.pi / 2)]) * rng.choice([-1, 1], (n, 1))
        c = q[:, :2] + off * 0.05
        r = rng.uniform(0.05, 0.075, n)  # ~3 px soft patch at 96 px
        m = stamp_soft(_new(sc), *_px(sc, c), _r(sc, r * 1.25))
        sat = c + rng.normal(0, 1, (n, 2)) * r[:, None] * 0.5
        masks["cotton_wool_spots"] = stamp_soft(m, *_px(sc, sat), _r(sc, r * 0.9), 0.85)
    if "drusen" in f:
        d = f["drusen"]
        n = d["count"]
        p = sc.fovea + rng.normal(0, 0.13, (n, 2))
        rmax = 0.045 if d["large"] else 0.034
        masks["drusen"] = stamp_soft(_new(sc), *_px(sc, p), _r(sc, rng.uniform(0.024, rmax, n)))
    if "pigment_clumps" in f:
        n = f["pigment_clumps"]["count"]
        p = sc.fovea + rng.normal(0, 0.07, (n, 2))
        masks["pigment_clumps"] = stamp(_new(sc), *_px(sc, p), _r(sc, rng.uniform(0.014, 0.024, n)))
    if "macular_atrophy" in f:
        a = f["macular_atrophy"]
        m = _new(sc)
        wobble = smooth_noise(rng, sc.size, 6)
        for i in range(a["count"]):
            c = sc.fovea + (rng.normal(0, 0.04, 2) if i == 0 else (sc.disc - sc.fovea) * rng.uniform(0.35, 0.6))
            r = a["size"] * rng.uniform(0.8, 1.2)
            d = np.hypot(xx - c[0], yy - c[1]) / r + 0.18 * wobble
            m = np.maximum(m, smoothstep(1.0, 0.85, d))
        masks["macular_atrophy"] = m
    if "tessellation" in f:
        # Dark intervascular spaces between the large choroidal vessels: two warped stripe families whose
        # overlap gives an irregular, polygonal (tigroid) pattern, fading towards the fovea.
        sev = f["tessellation"]["severity"]
        c = sc.fovea * 0.5 + sc.disc * 0.5
        ang = np.arctan2(yy - c[1], xx - c[0])
        rad = np.hypot(xx - c[0], yy - c[1])
        k = rng.integers(34, 46)
        a = np.sin(k * ang + 2.5 * smooth_noise(rng, sc.size, 6))
        b = np.sin(rng.uniform(18, 26) * rad + 2.0 * smooth_noise(rng, sc.size, 6))
        dark = smoothstep(0.2, 0.9, 0.65 * a + 0.35 * b)
        radial = smoothstep(0.08, 0.4, np.hypot(xx - sc.fovea[0], yy - sc.fovea[1]))
        masks["tessellation"] = (dark * radial * (0.55 + 0.45 * sev)).astype(np.float32)
    if "peripapillary_atrophy" in f:
        sev = f["peripapillary_atrophy"]["severity"]
        shift = temporal * sc.disc_r * (0.25 + 0.55 * sev)
        ro = sc.disc_r * (1.12 + 0.75 * sev)
        outer = np.hypot(xx - sc.disc[0] - shift[0], yy - sc.disc[1] - shift[1])
        masks["peripapillary_atrophy"] = (smoothstep(ro, ro - 0.02, outer) * (1.0 - sc.disc_alpha)).astype(np.float32)
    if "bone_spicules" in f:
        n = f["bone_spicules"]["count"]
        c = _sample_points(rng, n, sc.fovea, 0.5, 0.95, sc, margin=0.06)
        arms = rng.integers(3, 6, n)
        segs = []
        for i in range(n):  # n <= 60, arms <= 5: a short loop builds the (tiny) point list
            a = rng.uniform(0, 2 * np.pi, arms[i])
            ln = rng.uniform(0.025, 0.06, arms[i])
            t = np.linspace(0, 1, 6)
            segs.append(np.column_stack([(c[i, 0] + np.outer(np.cos(a) * ln, t)).ravel(),
                                         (c[i, 1] + np.outer(np.sin(a) * ln, t)).ravel()]))
        p = np.concatenate(segs)
        masks["bone_spicules"] = stamp(_new(sc), *_px(sc, p), max(0.55, 0.012 * sc.size / 2))
    if "foveal_defect" in f:
        sev = f["foveal_defect"]["severity"]
        r = 0.06 + 0.035 * sev  # 2.9-4.6 px radius at 96 px
        d = np.hypot(xx - sc.fovea[0], yy - sc.fovea[1])
        masks["foveal_defect"] = smoothstep(r + 0.008, r - 0.008, d).astype(np.float32)
        masks["foveal_cuff"] = (smoothstep(r * 1.9, r * 1.2, d) * (1 - masks["foveal_defect"])).astype(np.float32)
        base = sc.fovea + rng.normal(0, r * 0.35, (5, 2))
        masks["foveal_dots"] = stamp(_new(sc), *_px(sc, base), _r(sc, 0.012))
    if "non_perfusion" in f:
        n = f["non_perfusion"]["count"]
        p = _sample_points(rng, n, sc.fovea, 0.45, 0.85, sc, avoid_disc=2.0)
        masks["non_perfusion"] = stamp_soft(_new(sc), *_px(sc, p), _r(sc, rng.uniform(0.14, 0.24, n)))
    if "macular_edema" in f:
        sev = f["macular_edema"]["severity"]
        m = stamp_soft(_new(sc), *_px(sc, sc.fovea[None]), _r(sc, 0.1 + 0.1 * sev))
        p = _sample_points(rng, int(3 + 6 * sev), sc.fovea, 0.08, 0.35, sc)
        masks["macular_edema"] = stamp_soft(m, *_px(sc, p), _r(sc, rng.uniform(0.04, 0.07, len(p))), 0.8)


# ------------------------------------------------------------------------------------------------- scene
def build_scene(case: Case, size: int, rng: np.random.Generator) -> FundusScene:
    """Sample geometry (nuisance: eye side, disc position, rotation, vessel layout) and draw all masks."""
    xx, yy = norm_grid(size)
    side = 1 if case.eye == "right" else -1
    rot = float(rng.normal(0, 0.1))
    fov_c = rng.normal(0, 0.015, 2)
    fov_r = float(rng.uniform(0.93, 0.98))
    fovea = np.array([-0.06 * side, 0.02]) + rng.normal(0, 0.03, 2)
    disc = fovea + _rot(rot) @ np.array([0.5 * side, -0.04]) * rng.uniform(0.92, 1.05)
    disc_r = float(rng.uniform(0.14, 0.16))  # ~6.7-7.7 px radius at 96 px
    aspect = 1.0 - 0.28 * case.sev("tilted_disc")  # tilted disc: oval, narrower horizontally
    dd = np.hypot((xx - disc[0]) / aspect, yy - disc[1])
    disc_alpha = smoothstep(disc_r + 0.012, disc_r - 0.012, dd).astype(np.float32)
    cup_r = disc_r * case.disc["cdr"]
    cup_c = disc + np.array([-side * 0.2 * (disc_r - cup_r), 0.0])  # cups sit slightly temporal
    cd = np.hypot((xx - cup_c[0]) / aspect, yy - cup_c[1])
    cup_alpha = smoothstep(cup_r + 0.018, cup_r - 0.01, cd).astype(np.float32)
    d_fov = np.hypot(xx - fov_c[0], yy - fov_c[1])
    fov = smoothstep(fov_r + 0.004, fov_r - 0.016, d_fov).astype(np.float32)
    d_fovea = np.hypot(xx - fovea[0], yy - fovea[1]).astype(np.float32)

    pts, main_paths = _vessel_tree(case, rng, size, disc, side, rot)
    maps = {}
    for kind in ("vein", "artery"):
        p = pts[kind]
        keep = np.hypot(p[:, 0] - fov_c[0], p[:, 1] - fov_c[1]) < fov_r
        p = p[keep]
        m = np.zeros((size, size), dtype=np.float32)
        stamp(m, to_px(p[:, 0], size), to_px(p[:, 1], size), np.maximum(p[:, 2] * size / 2, 0.45))
        maps[kind] = m
    sc = FundusScene(size=size, side=side, fovea=fovea, disc=disc, disc_r=disc_r, fov_c=fov_c, fov_r=fov_r, fov=fov,
                     d_fovea=d_fovea, disc_alpha=disc_alpha, cup_alpha=cup_alpha, artery=maps["artery"],
                     vein=maps["vein"], main_paths=main_paths)
    _draw_lesions(case, sc, rng)
    return sc
