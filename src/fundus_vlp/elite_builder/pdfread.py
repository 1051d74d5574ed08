"""What a PDF page holds: embedded images with the rectangle each is drawn in, and text blocks with theirs
(PyMuPDF). Opening checks the cases that need a clear message instead of an empty result.

A damaged file (truncated, garbled header, broken cross-reference table) is repaired silently by MuPDF and
then reads as a shorter or empty document; :func:`pdf_damage` reports the repair and what survived it, from
MuPDF's warning store, so that a half-read book is not taken for a whole one."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import re
from typing import Iterable, List, Tuple

from ..runtime.extras import require

fitz = require("fitz", "elite", "build-elite (atlas PDFs)")  # PyMuPDF
from PIL import Image

Rect = Tuple[float, float, float, float]  # x0, y0, x1, y1 in page points, y downwards
# a page without text whose images cover this share of it is a scan (a full-page plate leaves margins)
SCANNED_PAGE_COVER = 0.8
SCANNED_REMEDY = "its captions are pixels: run OCR on the PDF first (e.g. `ocrmypdf in.pdf out.pdf`)"


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

    @property
    def scanned(self) -> bool:
        """A scanned page: no text layer, and images (one, or strips) cover most of the page. Its captions are
        pixels, so its images must not be matched to a neighbouring page's caption (as a plate would be)."""
        if self.blocks or not self.images:
            return False
        covered = sum((b[2] - b[0]) * (b[3] - b[1]) for b in (p.bbox for p in self.images))
        return covered >= SCANNED_PAGE_COVER * self.width * self.height


@dataclass
class Damage:
    """A PDF that MuPDF had to repair or read with errors: objects recovered of those referenced, and why."""

    repaired: bool
    recovered: int
    referenced: int
    messages: List[str]

    def __str__(self) -> str:
        what = (f"repaired, {self.recovered} of {self.referenced} objects recovered" if self.repaired
                else "read with errors")
        detail = "; ".join(self.messages[:3]) + (f"; ... {len(self.messages) - 3} more" if len(self.messages) > 3 else "")
        return f"damaged: {what}" + (f" (MuPDF: {detail})" if detail else "")


_REFERENCE = re.compile(r"\b(\d+) 0 R\b")


def mupdf_messages() -> List[str]:
    """The warnings and errors MuPDF stored since the last call (distinct lines, in order); empties the store."""
    lines = fitz.TOOLS.mupdf_warnings(reset=True).splitlines()
    return list(dict.fromkeys(line.strip() for line in lines if line.strip() and not line.startswith("...")))


def pdf_damage(doc: fitz.Document, messages: List[str]) -> Damage | None:
    """What a repair left of ``doc`` (None for an intact file read without errors). ``messages``: MuPDF's
    warnings while the file was opened and read (:func:`mupdf_messages`).

    The objects that survived are those with a body; the objects the file should have are every number the
    cross-reference table lists or a surviving object refers to (a truncated file loses its tail, whose
    objects are still referred to by the pages before it)."""
    if not doc.is_repaired and not messages:
        return None
    referenced, recovered = set(range(1, doc.xref_length())), 0
    for xref in range(1, doc.xref_length()):
        try:
            body = doc.xref_object(xref, compressed=True)
        except (RuntimeError, ValueError):
            continue
        if body.strip() != "null":
            recovered += 1
            referenced.update(int(n) for n in _REFERENCE.findall(body))
    return Damage(bool(doc.is_repaired), recovered, len(referenced), messages)


def open_pdf(path: str | Path) -> fitz.Document:
    """Open a PDF or raise ``PdfError``: missing, empty, not a PDF/corrupt, password-protected, no pages
    (a damaged file from which no page was recovered says so). MuPDF's warning store is emptied first, so
    :func:`mupdf_messages` afterwards holds this file's."""
    path = Path(path)
    if not path.is_file():
        raise PdfError(path, "file not found")
    if path.stat().st_size == 0:
        raise PdfError(path, "empty file (0 bytes)")
    mupdf_messages()
    try:
        doc = fitz.open(str(path), filetype="pdf")
    except (fitz.FileDataError, fitz.EmptyFileError, RuntimeError, ValueError) as exc:
        raise PdfError(path, f"not a readable PDF (corrupt or another format): {exc}") from None
    if doc.needs_pass:
        doc.close()
        raise PdfError(path, "encrypted: the PDF needs a password to open; decrypt it first "
                             "(e.g. `qpdf --decrypt --password=... in.pdf out.pdf`)")
    if doc.page_count == 0:
        damage = pdf_damage(doc, mupdf_messages())
        doc.close()
        raise PdfError(path, f"{damage}; no page could be recovered" if damage else "the PDF has no pages")
    return doc


def require_text_layer(doc: fitz.Document, path: str | Path) -> None:
    """Captions are read from the text layer; a scan without one has nothing to match figures with."""
    for page in doc:
        if page.get_text("text").strip():
            return
    raise PdfError(path, f"no text layer on any of its {doc.page_count} page(s): a scanned book? Captions "
                         "cannot be read; run OCR first (e.g. `ocrmypdf in.pdf out.pdf`)")


def scanned_reason(page: PageContent) -> str:
    return f"scanned: no text layer on page {page.number} (a page-sized image); {SCANNED_REMEDY}"


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
