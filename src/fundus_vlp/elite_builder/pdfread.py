"""What a PDF page holds: embedded images with the rectangle each is drawn in, and text blocks with theirs
(PyMuPDF). Opening checks the cases that need a clear message instead of an empty result."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import re
from typing import Iterable, List, Tuple

from ..runtime.extras import require

fitz = require("fitz", "elite", "build-elite (atlas PDFs)")  # PyMuPDF
from PIL import Image

Rect = Tuple[float, float, float, float]  # x0, y0, x1, y1 in page points, y downwards


class PdfError(ValueError):
    """A PDF that cannot be used: the message names the file and says why."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass
class PlacedImage:
    """Where an image is drawn; its pixels are decoded only when a figure needs them (``load_pixels``)."""

    bbox: Rect
    xref: int  # 0 for an inline image (rendered from the page instead)


@dataclass
class TextBlock:
    bbox: Rect
    text: str


@dataclass
class PageContent:
    number: int  # 1-based
    width: float
    height: float
    images: List[PlacedImage] = field(default_factory=list)
    blocks: List[TextBlock] = field(default_factory=list)


def open_pdf(path: str | Path) -> fitz.Document:
    """Open a PDF or raise ``PdfError``: missing, empty, not a PDF/corrupt, password-protected, no pages."""
    path = Path(path)
    if not path.is_file():
        raise PdfError(path, "file not found")
    if path.stat().st_size == 0:
        raise PdfError(path, "empty file (0 bytes)")
    try:
        doc = fitz.open(str(path), filetype="pdf")
    except (fitz.FileDataError, fitz.EmptyFileError, RuntimeError, ValueError) as exc:
        raise PdfError(path, f"not a readable PDF (corrupt or another format): {exc}") from None
    if doc.needs_pass:
        doc.close()
        raise PdfError(path, "encrypted: the PDF needs a password to open; decrypt it first "
                             "(e.g. `qpdf --decrypt --password=... in.pdf out.pdf`)")
    if doc.page_count == 0:
        doc.close()
        raise PdfError(path, "the PDF has no pages")
    return doc


def require_text_layer(doc: fitz.Document, path: str | Path) -> None:
    """Captions are read from the text layer; a scan without one has nothing to match figures with."""
    for page in doc:
        if page.get_text("text").strip():
            return
    raise PdfError(path, f"no text layer on any of its {doc.page_count} page(s): a scanned book? Captions "
                         "cannot be read; run OCR first (e.g. `ocrmypdf in.pdf out.pdf`)")


def _to_pil(pix: fitz.Pixmap) -> Image.Image:
    if pix.alpha:
        pix = fitz.Pixmap(pix, 0)  # drop alpha: a figure is opaque on the page
    if pix.colorspace is None or pix.colorspace.n not in (1, 3):
        pix = fitz.Pixmap(fitz.csRGB, pix)  # CMYK, indexed, ... -> RGB
    mode = "L" if pix.n == 1 else "RGB"
    return Image.frombytes(mode, (pix.width, pix.height), pix.samples)


def load_pixels(doc: fitz.Document, page_number: int, placed: PlacedImage) -> Image.Image:
    """The image at the resolution embedded in the PDF (an inline image is rendered at 200 dpi)."""
    if placed.xref > 0:
        return _to_pil(fitz.Pixmap(doc, placed.xref))
    return _to_pil(doc[page_number - 1].get_pixmap(clip=fitz.Rect(placed.bbox), dpi=200))


def _placements(page: fitz.Page) -> List[Tuple[dict, int]]:
    """(image info, xref) of every image drawn on the page.

    ``get_image_info(xrefs=True)`` decodes and hashes every image to find its xref, which costs more than
    the rest of the page; the xref is found instead from the page's image list by pixel size, and only a
    page where two images share a size pays for the exact lookup."""
    infos = page.get_image_info()
    by_size: dict = {}
    for item in page.get_images(full=True):
        by_size.setdefault((item[2], item[3]), set()).add(item[0])
    sizes = [(i["width"], i["height"]) for i in infos]
    if all(len(by_size.get(s, ())) == 1 for s in sizes):
        return [(i, next(iter(by_size[s]))) for i, s in zip(infos, sizes)]
    return [(i, int(i.get("xref") or 0)) for i in page.get_image_info(xrefs=True)]


def read_page(doc: fitz.Document, index: int, min_side_pt: float) -> PageContent:
    """Image rectangles and text blocks of page ``index`` (0-based); no pixels are decoded here."""
    page = doc[index]
    content = PageContent(index + 1, page.rect.width, page.rect.height)
    for info, xref in _placements(page):
        bbox = fitz.Rect(info["bbox"]) & page.rect
        if bbox.is_empty or min(bbox.width, bbox.height) < min_side_pt:
            continue
        content.images.append(PlacedImage(tuple(bbox), xref))
    # "blocks" rather than "dict": the dict form copies every image's bytes into the result
    for x0, y0, x1, y1, text, _, kind in page.get_text("blocks", sort=True):
        text = join_lines(text.split("\n")) if kind == 0 else ""
        if text:
            content.blocks.append(TextBlock((x0, y0, x1, y1), text))
    return content


_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def join_lines(lines: Iterable[str]) -> str:
    """The lines of a block as one string: a space between lines, none where a line break falls between
    Chinese characters (Chinese has no spaces between words)."""
    out = ""
    for line in lines:
        line = " ".join(line.split())
        if not line:
            continue
        if out and not (_CJK.match(out[-1]) and _CJK.match(line[0])):
            out += " "
        out += line
    return out


def has_vector_art(doc: fitz.Document, page_number: int, area: Rect) -> bool:
    """Whether vector drawing commands (lines, curves, fills) fall inside ``area`` of the page."""
    rect = fitz.Rect(area)
    return any(fitz.Rect(d["rect"]).intersects(rect) for d in doc[page_number - 1].get_drawings())
