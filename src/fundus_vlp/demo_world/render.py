"""Dispatch a :class:`~.scene.Case` to the renderer of its modality."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .render_cfp import render_cfp
from .render_ffa import render_ffa
from .render_oct import render_oct
from .scene import Case

__all__ = ["RENDERERS", "render_case"]

RENDERERS: dict[str, Callable[[Case, int, np.random.Generator], np.ndarray]] = {
    "CFP": render_cfp,
    "FFA": render_ffa,
    "OCT": render_oct,
}


def render_case(case: Case, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render ``case`` as a uint8 RGB array of shape (size, size, 3)."""
    return RENDERERS[case.modality](case, size, rng)
