"""Settings of ``fundus-vlp build-elite`` (``--config FILE.yaml`` and ``key=value`` overrides)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EliteBuildCfg:
    # which embedded images count: smaller placements are icons, logos and ornaments
    min_image_side_pt: float = 36.0  # on the page, in points (1/72 inch)
    min_image_px: int = 24  # in pixels, after splitting into panels
    # layout: how far (fraction of the page height) a caption may be from its figure on the same page
    max_caption_gap: float = 0.3
    # composite figures: interior white bands at least this wide split panels
    gutter_level: int = 235  # a pixel this bright (0-255, every channel) is paper white
    gutter_min_px: int = 3
    gutter_min_fraction: float = 0.005  # of the composite's shorter side
    min_panel_fraction: float = 0.12  # a piece narrower/shorter than this fraction of the composite is a label
    # non-fundus figures (drawings, tables) are mostly paper white
    max_white_fraction: float = 0.4
    # de-duplication: dHash Hamming distance at or below which two images are the same image
    dedup_max_distance: int = 2
    # the review page starts with pairs below this confidence unticked
    review_min_confidence: float = 0.5
    # saved images: longer side capped at this many pixels (0 = native resolution of the PDF)
    max_image_side: int = 0
    # a PDF that MuPDF had to repair (truncated, garbled header) may have lost pages: its pairs are kept, and
    # the file marked done, only when this is true (CLI --accept-repaired)
    accept_repaired: bool = False
