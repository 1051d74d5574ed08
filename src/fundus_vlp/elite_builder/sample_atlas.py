"""A synthetic atlas PDF made of demo-world figures, with the pairs a perfect builder would extract.

Used by the tests (precision/recall of ``build_elite``) and by the speed benchmark, and handy for trying
``fundus-vlp build-elite`` without a book. Each chapter (9 pages) holds: a single figure with an English
caption and a body paragraph that cites another figure; a bilingual figure (Chinese and English captions in
separate blocks); a composite (two panels in one embedded image, white gutter) with a bilingual caption in
one block; two separate images as panels ``(a)``/``(b)``; two figures stacked on one page; a figure with its
Chinese-only caption beside it; a raster table and a raster line drawing (to reject); a vector drawing and
a repeated image (to reject); a 2×2 composite with panels ``A:``..``D:``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ..runtime.extras import require

ZH_MODALITY = {"CFP": "彩色眼底照相", "FFA": "荧光素眼底血管造影", "OCT": "光学相干断层扫描"}
ZH_CONDITION = {
    "normal": "正常眼底", "glaucoma": "青光眼",
    "mild diabetic retinopathy": "轻度糖尿病视网膜病变",
    "moderate diabetic retinopathy": "中度糖尿病视网膜病变",
    "severe diabetic retinopathy": "重度糖尿病视网膜病变",
    "age related macular degeneration": "年龄相关性黄斑变性",
    "hypertensive retinopathy": "高血压性视网膜病变",
    "pathologic myopia": "病理性近视", "cataract": "白内障", "macular hole": "黄斑裂孔",
    "retinitis pigmentosa": "视网膜色素变性",
}
PAGE_W, PAGE_H = 595.0, 842.0  # A4 in points
_MARGIN = 56.0
_EN_FONT, _ZH_FONT = "helv", "china-s"  # china-s: MuPDF's built-in simplified Chinese font (no file needed)


@dataclass
class DemoFigure:
    image: Path
    caption: str
    modality: str
    condition: str

    @property
    def caption_zh(self) -> str:
        return f"{ZH_CONDITION.get(self.condition, self.condition)}，{ZH_MODALITY[self.modality]}。"


@dataclass
class ExpectedPair:
    page: int
    figure: str
    panel: str
    image: Path  # the demo-world file the pair's picture was made from
    caption: str
    caption_zh: str
    modality: str


@dataclass
class SampleAtlas:
    path: Path
    pages: int
    pairs: List[ExpectedPair] = field(default_factory=list)
    rejects: Dict[str, str] = field(default_factory=dict)  # figure -> what it is ("table", "drawing", ...)


def demo_figures(world) -> List[DemoFigure]:
    """The demo world's elite images with their captions, modality and condition, CFP/FFA/OCT interleaved."""
    truth = pd.read_csv(world.truth_csv, dtype=str, keep_default_na=False).set_index("image")
    by_modality: Dict[str, List[DemoFigure]] = {}
    for modality, csv in sorted(world.elite_csvs.items()):
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        by_modality[modality] = [DemoFigure(world.root / r.image, " ".join(r.caption.split()), modality,
                                            truth.loc[r.image, "conditions"].split("|")[0]) for r in frame.itertuples()]
    return [f for group in zip(*by_modality.values()) for f in group] + \
        [f for group in by_modality.values() for f in group[min(map(len, by_modality.values())):]]


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def composite(images: Sequence[Image.Image], columns: int, gutter: int = 10, margin: int = 6) -> Image.Image:
    """Panels on a white sheet in a grid (row-major), separated by white gutters."""
    side = max(max(im.size) for im in images)
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (2 * margin + columns * side + (columns - 1) * gutter,
                              2 * margin + rows * side + (rows - 1) * gutter), "white")
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        at = (margin + c * (side + gutter), margin + r * (side + gutter))
        sheet.paste(im.convert("RGB").resize((side, side)), at)
    return sheet


def table_image(width: int = 320, height: int = 160) -> Image.Image:
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    for y in range(10, height, 30):
        d.line([(10, y), (width - 10, y)], fill="black", width=2)
    for x in (10, width // 3, 2 * width // 3, width - 10):
        d.line([(x, 10), (x, 10 + 30 * ((height - 20) // 30))], fill="black", width=2)
    for r, y in enumerate(range(18, height - 30, 30)):
        for c, x in enumerate((18, width // 3 + 8, 2 * width // 3 + 8)):
            d.text((x, y), f"stage {r}{c}", fill="black")
    return im


def drawing_image(size: int = 240) -> Image.Image:
    """A schematic eye: line art on white."""
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    d.ellipse([20, 20, size - 20, size - 20], outline="black", width=3)
    d.ellipse([size // 2 - 30, size // 2 - 30, size // 2 + 30, size // 2 + 30], outline="black", width=2)
    d.line([(20, size // 2), (size - 20, size // 2)], fill="gray", width=1)
    d.arc([60, 60, size - 60, size - 60], 200, 340, fill="black", width=2)
    d.text((size // 2 - 20, size - 18), "lens", fill="black")
    return im


class _Writer:
    def __init__(self, doc, picture_side: int = 0):
        self.doc = doc
        self.picture_side = picture_side
        self.page = None
        self.y = _MARGIN

    def new_page(self) -> int:
        self.page = self.doc.new_page(width=PAGE_W, height=PAGE_H)
        self.y = _MARGIN
        return self.doc.page_count

    def text(self, text: str, x0: float = _MARGIN, x1: float = PAGE_W - _MARGIN, size: float = 9.0,
             chinese: bool = False, height: Optional[float] = None) -> None:
        fitz = require("fitz", "elite", "build-elite (atlas PDFs)")

        h = height or 14 + size * 1.6 * (len(text) * (2.0 if chinese else 1.0) * size * 0.5 / (x1 - x0) + 1)
        rect = fitz.Rect(x0, self.y, x1, self.y + h)
        left = self.page.insert_textbox(rect, text, fontname=_ZH_FONT if chinese else _EN_FONT, fontsize=size)
        if left < 0:
            raise ValueError(f"sample atlas: text does not fit its box ({left:.0f} pt short): {text[:40]}")
        self.y += h - left + 8

    def image(self, image: Image.Image, width: float, x0: float = _MARGIN) -> Tuple[float, float, float, float]:
        fitz = require("fitz", "elite", "build-elite (atlas PDFs)")

        height = width * image.height / image.width
        rect = fitz.Rect(x0, self.y, x0 + width, self.y + height)
        self.page.insert_image(rect, stream=_png(image))
        self.y += height + 6
        return tuple(rect)

    def images_in_row(self, images: Sequence[Image.Image], width: float, gap: float = 14.0) -> None:
        fitz = require("fitz", "elite", "build-elite (atlas PDFs)")

        top, bottom = self.y, self.y
        for i, im in enumerate(images):
            h = width * im.height / im.width
            x0 = _MARGIN + i * (width + gap)
            self.page.insert_image(fitz.Rect(x0, top, x0 + width, top + h), stream=_png(im))
            bottom = max(bottom, top + h)
        self.y = bottom + 6


def _chapter(w: _Writer, atlas: SampleAtlas, chapter: int, figs: List[DemoFigure], repeat_of: DemoFigure) -> None:
    """One chapter of nine pages using 13 figures from ``figs``."""
    c = chapter
    f = iter(figs)

    def _open(fig: DemoFigure) -> Image.Image:
        with Image.open(fig.image) as im:
            im = im.convert("RGB")
        return im.resize((w.picture_side, w.picture_side), Image.BICUBIC) if w.picture_side else im

    def expect(page, number, panel, fig, caption, caption_zh=""):
        atlas.pairs.append(ExpectedPair(page, number, panel, fig.image, caption, caption_zh, fig.modality))

    # 1: a single figure, English caption below; the body text cites another figure (not a caption)
    page = w.new_page()
    w.text(f"Chapter {c}. The body text of an atlas chapter cites figures, as in Fig. {c}-2 and Figure {c}.3, "
           f"without being a caption itself.", size=10)
    a = next(f)
    w.image(_open(a), 220)
    w.text(f"Fig. {c}-1 {a.caption}")
    expect(page, f"{c}-1", "", a, a.caption)

    # 2: bilingual, Chinese and English captions in separate blocks below the image
    page = w.new_page()
    b = next(f)
    w.image(_open(b), 220)
    w.text(f"图 {c}-2 {b.caption_zh}", chinese=True)
    w.text(f"Figure {c}.2 {b.caption}")
    expect(page, f"{c}-2", "", b, b.caption, b.caption_zh)

    # 3: composite of two panels in one embedded image; bilingual caption in one block
    page = w.new_page()
    p1, p2 = next(f), next(f)
    w.image(composite([_open(p1), _open(p2)], columns=2), 380)
    lead, lead_zh = f"Case {c}-3, the same eye on two examinations.", f"病例{c}-3，同一眼的两次检查。"
    w.text(f"图{c}-3 {lead_zh}A．{p1.caption_zh}B．{p2.caption_zh} "
           f"Fig. {c}-3 {lead} A. {p1.caption} B. {p2.caption}", chinese=True)
    expect(page, f"{c}-3", "A", p1, f"{lead} {p1.caption}", lead_zh + p1.caption_zh)
    expect(page, f"{c}-3", "B", p2, f"{lead} {p2.caption}", lead_zh + p2.caption_zh)

    # 4: two separate embedded images as panels (a), (b); the lead-in ends with a colon
    page = w.new_page()
    q1, q2 = next(f), next(f)
    w.images_in_row([_open(q1), _open(q2)], 200)
    lead = f"Two modalities of case {c}-4:"
    w.text(f"FIGURE {c}-4 {lead} (a) {q1.caption} (b) {q2.caption}")
    expect(page, f"{c}-4", "A", q1, f"{lead} {q1.caption}")
    expect(page, f"{c}-4", "B", q2, f"{lead} {q2.caption}")

    # 5: two figures stacked on one page: each image goes to the caption right below it
    page = w.new_page()
    s1, s2 = next(f), next(f)
    w.image(_open(s1), 170)
    w.text(f"Fig. {c}-5 {s1.caption}")
    w.y += 20
    w.image(_open(s2), 170)
    w.text(f"Fig. {c}-6 {s2.caption}")
    expect(page, f"{c}-5", "", s1, s1.caption)
    expect(page, f"{c}-6", "", s2, s2.caption)

    # 6: a Chinese-only caption beside (right of) its image
    page = w.new_page()
    z = next(f)
    top = w.y
    w.image(_open(z), 200)
    w.y = top + 40
    w.text(f"图{c}-7 {z.caption_zh}", x0=_MARGIN + 220, chinese=True)
    expect(page, f"{c}-7", "", z, z.caption_zh, z.caption_zh)

    # 7: a raster table and a raster drawing, each with a figure caption: rejected
    w.new_page()
    w.image(table_image(), 320)
    w.text(f"Fig. {c}-8 Staging of diabetic retinopathy (table).")
    w.y += 30
    w.image(drawing_image(), 200)
    w.text(f"Fig. {c}-9 Schematic cross-section of the eye.")
    atlas.rejects.update({f"{c}-8": "table", f"{c}-9": "drawing"})

    # 8: a vector drawing (no embedded image), and a picture printed a second time: rejected
    w.new_page()
    fitz = require("fitz", "elite", "build-elite (atlas PDFs)")

    w.page.draw_circle(fitz.Point(PAGE_W / 2, w.y + 90), 80, color=(0, 0, 0), width=1.5)
    w.page.draw_line(fitz.Point(PAGE_W / 2 - 80, w.y + 90), fitz.Point(PAGE_W / 2 + 80, w.y + 90))
    w.y += 190
    w.text(f"Fig. {c}-10 Vector diagram of the visual axis.")
    w.y += 30
    w.image(_open(repeat_of), 160)
    w.text(f"Fig. {c}-11 {repeat_of.caption}")
    atlas.rejects.update({f"{c}-10": "vector", f"{c}-11": "duplicate"})

    # 9: a 2x2 composite, panels A: .. D:, English caption below
    page = w.new_page()
    grid = [next(f) for _ in range(4)]
    w.image(composite([_open(g) for g in grid], columns=2), 300)
    lead = f"Case {c}-12"
    w.text(f"Fig. {c}-12 {lead} " + " ".join(f"{chr(65 + i)}: {g.caption}" for i, g in enumerate(grid)))
    for i, g in enumerate(grid):
        expect(page, f"{c}-12", chr(65 + i), g, f"{lead}. {g.caption}")


FIGURES_PER_CHAPTER = 13
PAGES_PER_CHAPTER = 9


def write_sample_atlas(world, path: str | Path, chapters: int = 1, first_chapter: int = 1,
                       picture_side: int = 0) -> SampleAtlas:
    """Write a synthetic atlas of ``chapters`` chapters to ``path`` and return what it contains.

    ``picture_side``: embed each picture resampled to that many pixels a side (0: as the world made it),
    for a speed measure closer to a scanned book.
    Figures cycle through the demo world's elite images; with more chapters than the world has images
    for, later chapters repeat pictures (the builder then rejects them as duplicates — the expected pairs
    list only the first chapter that uses a picture, so use one chapter per distinct set for accuracy).
    """
    fitz = require("fitz", "elite", "build-elite (atlas PDFs)")

    figures = demo_figures(world)
    if len(figures) < FIGURES_PER_CHAPTER:
        raise ValueError(f"the demo world has {len(figures)} elite images; a chapter needs {FIGURES_PER_CHAPTER}")
    path = Path(path)
    atlas = SampleAtlas(path, 0)
    doc = fitz.open()
    writer = _Writer(doc, picture_side)
    seen: set = set()
    for k in range(chapters):
        start = (k * FIGURES_PER_CHAPTER) % len(figures)
        figs = (figures[start:] + figures[:start])[:FIGURES_PER_CHAPTER]
        before = len(atlas.pairs)
        _chapter(writer, atlas, first_chapter + k, figs, repeat_of=figs[0])
        fresh = [p for p in atlas.pairs[before:] if p.image not in seen]
        atlas.pairs[before:] = fresh
        seen.update(p.image for p in fresh)
    doc.save(path, garbage=3, deflate=True)
    atlas.pages = doc.page_count
    doc.close()
    return atlas


def image_matches(a: Image.Image, b: Image.Image, tolerance: float = 6.0) -> bool:
    """Same picture (up to resampling): mean absolute difference at 32×32 below ``tolerance`` grey levels."""
    x = np.asarray(a.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float32)
    y = np.asarray(b.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float32)
    return float(np.abs(x - y).mean()) < tolerance
