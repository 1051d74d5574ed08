"""Perceptual de-duplication: the same picture printed twice (or re-encoded) has the same dHash."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from PIL import Image


def dhash(image: Image.Image, size: int = 8) -> int:
    """Difference hash: ``size``×``size`` bits, each "is this pixel brighter than its right neighbour" on
    a (size+1)×size grey thumbnail. Robust to scaling and recompression, not to cropping."""
    grey = np.asarray(image.convert("L").resize((size + 1, size), Image.LANCZOS), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


class DuplicateIndex:
    """Hashes seen so far -> the image that first had them."""

    def __init__(self, max_distance: int = 2):
        self.max_distance = max_distance
        self._seen: Dict[int, str] = {}

    def find(self, h: int) -> Optional[str]:
        if h in self._seen:
            return self._seen[h]
        if self.max_distance > 0:
            for other, name in self._seen.items():
                if hamming(h, other) <= self.max_distance:
                    return name
        return None

    def add(self, h: int, name: str) -> None:
        self._seen.setdefault(h, name)

    def forget(self, h: int) -> None:
        self._seen.pop(h, None)
