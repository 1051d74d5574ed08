"""Segmentation ground truth of the demo world: a label map drawn from the same scene as the CFP image.

The renderer already knows where it paints each structure (:class:`~.fundus.FundusScene` alpha maps), so the
mask is exact, not re-estimated from pixels. Classes are mutually exclusive; where two overlap, the one that
is painted on top in the image wins:

* ``disc`` is the optic-disc region outside the cup (the neuroretinal rim) and ``cup`` the cup; vessels
  crossing the disc belong to the disc/cup region, as in disc/cup annotations of real data sets;
* ``vessel`` is arteries and veins (outside the disc);
* ``lesion`` is every haemorrhage (dot, blot, flame, microaneurysm) and exudate (hard exudates, cotton wool
  spots), painted after the vessels and so on top of them.

A pixel belongs to a structure when its alpha is at least 0.5 and it lies inside the field of view.
"""
from __future__ import annotations

import numpy as np

from .fundus import FundusScene

__all__ = ["SEGMENTATION_EXPERIMENT", "SEGMENTATION_DESCRIPTION", "SEGMENTATION_CLASSES", "LESION_MASKS",
           "SEGMENTATION_CONDITIONS", "label_map"]

SEGMENTATION_EXPERIMENT = "demo_segmentation"
SEGMENTATION_DESCRIPTION = "CFP images with exact label maps: background, vessel, disc (rim), cup, lesion"
SEGMENTATION_CLASSES = ("background", "vessel", "disc", "cup", "lesion")
LESION_MASKS = ("microaneurysms", "haemorrhages", "flame_haemorrhages", "hard_exudates", "cotton_wool_spots")
# Conditions of the segmentation images: every class appears (DR/hypertension lesions, glaucomatous cups).
SEGMENTATION_CONDITIONS = ("normal", "glaucoma", "mild diabetic retinopathy", "moderate diabetic retinopathy",
                           "severe diabetic retinopathy", "hypertensive retinopathy")
_ON = 0.5


def label_map(sc: FundusScene) -> np.ndarray:
    """uint8 (S, S) map of class indices into :data:`SEGMENTATION_CLASSES`."""
    out = np.zeros((sc.size, sc.size), dtype=np.uint8)
    inside = sc.fov >= _ON
    out[(np.maximum(sc.vein, sc.artery) >= _ON) & inside] = 1
    out[sc.disc_alpha >= _ON] = 2
    out[sc.cup_alpha >= _ON] = 3
    lesion = np.zeros_like(inside)
    for name in LESION_MASKS:
        if name in sc.masks:
            lesion |= sc.masks[name] >= _ON
    out[lesion & inside] = 4
    out[~inside] = 0
    return out
