"""Is a figure a fundus image at all, and which modality: colour fundus photograph (CFP), fluorescein
angiogram (FFA), OCT B-scan, or other.

Without a model the decision uses colour and texture statistics (``imagestats``): paper-white images are
drawings or tables; a colourful image with fundus (red-orange-yellow) hues is a CFP; a grey image with
horizontal layering is an OCT, otherwise an FFA. With a fundus-vlp model the caller passes a function
that returns zero-shot probabilities over ``MODALITIES`` (``fundus-vlp build-elite --model DIR`` builds it
from the model's image and text towers and the prompts below).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from PIL import Image

from ..data.config import MODALITIES as IMAGING_MODALITIES
from .config import EliteBuildCfg
from .imagestats import ImageStats, image_stats

MODALITIES = (*IMAGING_MODALITIES, "other")
FUNDUS_MODALITIES = MODALITIES[:3]

# Zero-shot prompts per class; the class prototype is the mean of their normalised text embeddings.
MODALITY_PROMPTS: Dict[str, List[str]] = {
    "CFP": ["a colour fundus photograph", "a color fundus photo of the retina", "fundus photography"],
    "FFA": ["a fundus fluorescein angiogram", "fluorescein angiography of the retina", "an angiogram of the fundus"],
    "OCT": ["an optical coherence tomography scan", "an OCT B-scan of the retina", "retinal layers on OCT"],
    "other": ["a diagram", "a drawing", "a table", "a chart"],
}

# A function from images to probabilities over MODALITIES (one mapping per image).
ModalityClassifier = Callable[[Sequence[Image.Image]], Sequence[Mapping[str, float]]]


@dataclass
class ModalityCall:
    modality: str
    confidence: float
    method: str  # "stats" or "zero-shot"


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 60.0), -60.0)))


def non_fundus_reason(stats: ImageStats, size: tuple, cfg: EliteBuildCfg) -> Optional[str]:
    """Why an image is not a fundus figure (a table, a drawing, too small), or None."""
    if min(size) < cfg.min_image_px:
        return f"too small ({size[0]}x{size[1]} px): icon or ornament"
    if stats.white_fraction > cfg.max_white_fraction:
        kind = "table (ruled grid on white)" if stats.ruled_lines >= 4 else "drawing (line art on white)"
        return f"{kind}: {stats.white_fraction:.0%} paper white"
    return None


def stats_probabilities(stats: ImageStats) -> Dict[str, float]:
    """Soft scores over MODALITIES from the statistics; they sum to 1.

    colour: how far the content is from grey (angiograms and OCT are grey, a CFP is not);
    warm: the share of fundus hues among the coloured pixels (a blue/green chart is "other");
    layered: vertical gradient energy dominating horizontal after smoothing = OCT layers.
    """
    colour = _sigmoid((stats.greyness - 0.10) / 0.02)
    warm = min(max(stats.warm_fraction, 0.0), 1.0)
    layered = _sigmoid((stats.layering - 0.555) / 0.012)
    return {"CFP": colour * warm, "FFA": (1 - colour) * (1 - layered), "OCT": (1 - colour) * layered,
            "other": colour * (1 - warm)}


def _best(probs: Mapping[str, float], method: str) -> ModalityCall:
    label = max(MODALITIES, key=lambda m: float(probs.get(m, 0.0)))
    return ModalityCall(label, round(float(probs.get(label, 0.0)), 4), method)


def classify_modalities(images: Sequence[Image.Image], stats: Sequence[ImageStats],
                        classifier: Optional[ModalityClassifier] = None) -> List[ModalityCall]:
    """One call per image: the zero-shot classifier when given, else the statistics."""
    if not images:
        return []
    if classifier is None:
        return [_best(stats_probabilities(s), "stats") for s in stats]
    results = list(classifier(list(images)))
    if len(results) != len(images):
        raise ValueError(f"modality classifier returned {len(results)} results for {len(images)} images")
    return [_best(r, "zero-shot") for r in results]


__all__ = ["MODALITIES", "FUNDUS_MODALITIES", "MODALITY_PROMPTS", "ModalityClassifier", "ModalityCall",
           "non_fundus_reason", "stats_probabilities", "classify_modalities", "image_stats"]
