"""Which images on a page belong to which caption.

A figure's caption sits below its images, or beside them, sometimes above; figures are stacked down
the page. Each image goes to the nearest caption (grouped by figure number) in one of those relations,
preferring below, then beside, then above, within ``max_caption_gap`` of the page height. An image with
no caption on its page goes to the one caption of the next (else previous) page that got no image, the
way an atlas puts a full-page figure opposite its caption.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .captions import parse_caption_block
from .pdfread import PageContent, Rect

_TOL = 2.0  # points: touching rectangles
_ABOVE_PENALTY = 0.5  # a caption above its image is less usual: its distance counts 1.5x
_BESIDE_PENALTY = 0.25


@dataclass
class FigureCaption:
    """The caption(s) of one figure number on one page (English and/or Chinese)."""

    page: int
    figure: str
    bbox: Rect
    texts: Dict[str, str] = field(default_factory=dict)  # language -> caption
    images: List[int] = field(default_factory=list)  # indices into the page's images (set by assign_images)
    image_page: Optional[int] = None  # page of the images when they are on a neighbouring page


def _union(a: Rect, b: Rect) -> Rect:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return min(a1, b1) - max(a0, b0)


def page_captions(page: PageContent) -> List[FigureCaption]:
    """Caption blocks of a page grouped by figure number (a bilingual figure may have two blocks)."""
    by_number: Dict[str, FigureCaption] = {}
    for block in page.blocks:
        for cap in parse_caption_block(block.text):
            fig = by_number.get(cap.figure)
            if fig is None:
                fig = by_number[cap.figure] = FigureCaption(page.number, cap.figure, block.bbox)
            fig.bbox = _union(fig.bbox, block.bbox)
            # two captions of one language and number on a page: keep both texts, in order
            fig.texts[cap.language] = f"{fig.texts[cap.language]} {cap.text}" if cap.language in fig.texts else cap.text
    return list(by_number.values())


def _distance(image: Rect, caption: Rect) -> Optional[float]:
    """Gap from an image to a caption in an accepted relation (penalised by how unusual it is), else None."""
    h_overlap = _overlap(image[0], image[2], caption[0], caption[2]) > 0
    v_overlap = _overlap(image[1], image[3], caption[1], caption[3]) > 0
    if h_overlap and caption[1] >= image[3] - _TOL:
        return caption[1] - image[3]
    if v_overlap and (caption[0] >= image[2] - _TOL or caption[2] <= image[0] + _TOL):
        gap = caption[0] - image[2] if caption[0] >= image[2] - _TOL else image[0] - caption[2]
        return max(gap, 0.0) * (1 + _BESIDE_PENALTY)
    if h_overlap and caption[3] <= image[1] + _TOL:
        return (image[1] - caption[3]) * (1 + _ABOVE_PENALTY)
    return None


def assign_images(page: PageContent, captions: List[FigureCaption], max_gap: float) -> List[int]:
    """Fill each caption's ``images``; returns the indices of the images that got no caption."""
    limit = max_gap * page.height
    orphans = []
    for i, placed in enumerate(page.images):
        best: Tuple[float, Optional[FigureCaption]] = (float("inf"), None)
        for cap in captions:
            d = _distance(placed.bbox, cap.bbox)
            if d is not None and d <= limit and d < best[0]:
                best = (d, cap)
        if best[1] is None:
            orphans.append(i)
        else:
            best[1].images.append(i)
    return orphans


def match_document(pages: List[PageContent], max_gap: float) -> Tuple[List[FigureCaption], List[Tuple[int, int]]]:
    """All figure captions of a document with their images, and the (page, image index) left without one."""
    per_page = {p.number: page_captions(p) for p in pages}
    orphans = {p.number: assign_images(p, per_page[p.number], max_gap) for p in pages}
    for p in pages:
        left = orphans[p.number]
        if not left or per_page[p.number]:
            continue  # a page with captions keeps its unmatched images unmatched
        for neighbour in (p.number + 1, p.number - 1):
            empty = [c for c in per_page.get(neighbour, []) if not c.images and c.image_page is None]
            if len(empty) == 1:
                empty[0].images, empty[0].image_page = list(left), p.number
                orphans[p.number] = []
                break
    captions = [c for n in sorted(per_page) for c in per_page[n]]
    return captions, [(n, i) for n in sorted(orphans) for i in orphans[n]]
