"""Sampling a *case*: which conditions, which findings, with which concrete severities and counts.

A :class:`Case` is modality-agnostic semantics (what is there). The renderers turn a case into pixels
(where exactly it is, plus nuisance variation) and the caption templates turn it into words, so an image and
its caption always agree on counts, sizes and locations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .ontology import CONDITIONS, FINDINGS

__all__ = ["Case", "sample_case"]


@dataclass
class Case:
    """What one image shows.

    Attributes:
        conditions: condition names (usually one; public multi-label rows may carry two).
        modality: ``CFP``, ``FFA`` or ``OCT``.
        eye: ``right`` or ``left`` (the optic disc is drawn on the image's right for a right eye).
        findings: finding key -> parameters (always has ``severity``; plus counts/sizes used by both the
            renderer and the caption templates).
        disc: optic-disc parameters shared by every case (``cdr`` = cup-to-disc ratio).
        quality: ``good`` or ``poor`` (poor = under-exposed and noisy, the ``['noisy']`` attribute).
    """

    conditions: tuple[str, ...]
    modality: str
    eye: str
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)
    disc: dict[str, float] = field(default_factory=dict)
    quality: str = "good"

    def has(self, key: str) -> bool:
        return key in self.findings

    def sev(self, key: str) -> float:
        return float(self.findings[key]["severity"]) if key in self.findings else 0.0


def _count(lo: int, hi: int) -> Callable[[float, np.random.Generator], dict[str, Any]]:
    # Count grows linearly with severity; +-1 jitter keeps neighbouring grades overlapping slightly.
    def f(sev: float, rng: np.random.Generator) -> dict[str, Any]:
        n = int(round(lo + (hi - lo) * sev + rng.integers(-1, 2)))
        return {"count": max(lo, n)}

    return f


def _exudates(sev: float, rng: np.random.Generator) -> dict[str, Any]:
    clusters = 1 + int(sev > 0.45) + int(sev > 0.85)
    return {"clusters": clusters, "per_cluster": int(5 + 10 * sev), "ring": bool(rng.random() < 0.4)}


def _drusen(sev: float, rng: np.random.Generator) -> dict[str, Any]:
    return {"count": int(12 + 30 * sev + rng.integers(0, 4)), "large": bool(sev > 0.6)}


def _atrophy(sev: float, rng: np.random.Generator) -> dict[str, Any]:
    return {"count": 1 + int(rng.random() < sev), "size": 0.06 + 0.06 * sev}


def _severity_only(sev: float, rng: np.random.Generator) -> dict[str, Any]:
    return {}


_PARAMS: dict[str, Callable[[float, np.random.Generator], dict[str, Any]]] = {
    "microaneurysms": _count(3, 18),
    "haemorrhages": _count(2, 22),
    "flame_haemorrhages": _count(2, 8),
    "cotton_wool_spots": _count(1, 5),
    "pigment_clumps": _count(2, 8),
    "bone_spicules": _count(18, 60),
    "non_perfusion": _count(2, 5),
    "hard_exudates": _exudates,
    "drusen": _drusen,
    "macular_atrophy": _atrophy,
}


def sample_case(conditions: str | tuple[str, ...] | list[str], modality: str, rng: np.random.Generator,
                quality: str = "good") -> Case:
    """Draw a concrete case for one or more conditions.

    Findings of several conditions are merged (max severity). Only findings visible in ``modality`` are kept,
    so a caption never describes what the image cannot show.
    """
    if isinstance(conditions, str):
        conditions = (conditions,)
    conditions = tuple(conditions)
    eye = "right" if rng.random() < 0.5 else "left"
    sev: dict[str, float] = {}
    for name in conditions:
        for spec in CONDITIONS[name].findings:
            # Draw both numbers unconditionally so the random stream does not depend on the outcome.
            present = rng.random() < spec.prob
            s = float(rng.uniform(*spec.severity))
            if present and modality in FINDINGS[spec.finding].modalities:
                sev[spec.finding] = max(sev.get(spec.finding, 0.0), s)
    findings: dict[str, dict[str, Any]] = {}
    for key in sorted(sev):  # sorted: deterministic order independent of condition order
        params = {"severity": round(sev[key], 4)}
        params.update(_PARAMS.get(key, _severity_only)(sev[key], rng))
        findings[key] = params
    # Cup-to-disc ratio: physiological cups are small; glaucomatous ones large. A gap (0.45..0.6) keeps the
    # label learnable from the image alone.
    if "cup" in findings:
        cdr = 0.6 + 0.28 * findings["cup"]["severity"]
    else:
        cdr = float(rng.uniform(0.2, 0.42))
    return Case(conditions=conditions, modality=modality, eye=eye, findings=findings,
                disc={"cdr": round(cdr, 2)}, quality=quality)
