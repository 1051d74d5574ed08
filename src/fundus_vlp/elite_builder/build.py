"""From atlas PDFs to an elite caption file, one PDF at a time, resumable.

Output folder::

    elite.csv                  image, caption, caption_zh, modality, source, page, figure, panel, confidence
    elite_{CFP,FFA,OCT}.csv    the same rows split by modality (one `data.elite` source each)
    rejected.csv               source, page, figure, panel, image, reason, caption
    review.html                the pairs for a person to accept/reject; exports a CSV
    build_report.json          per PDF: status, pages, pairs, rejected, seconds, error
    images/<pdf key>/...png    the pairs' images;  rejected/<pdf key>/...png  the rejected figures
    .state/<pdf key>.json      done-marker of a finished PDF: its rows and image hashes

``<pdf key>`` is the file stem plus the first hex digits of the PDF's SHA-256, so a rerun skips every PDF
whose marker exists (and redoes one whose bytes changed). The combined files are rewritten atomically
after every PDF, so a crash loses at most the PDF in progress.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pandas as pd
from PIL import Image

from ..runtime.extras import require
from ..runtime.files import write_text_atomic
from .captions import split_panels
from .config import EliteBuildCfg
from .dedup import DuplicateIndex, dhash
from .imagestats import ImageStats, image_stats
from .layout import FigureCaption, match_document
from .modality import FUNDUS_MODALITIES, ModalityClassifier, classify_modalities, non_fundus_reason
from .panels import join_strips, panel_boxes, reading_order
from .pdfread import PdfError, load_pixels, open_pdf, read_page, require_text_layer, has_vector_art
from .review import write_review_page

_logger = logging.getLogger(__name__)

ELITE_COLUMNS = ("image", "caption", "caption_zh", "modality", "source", "page", "figure", "panel", "confidence")
REJECTED_COLUMNS = ("source", "page", "figure", "panel", "image", "reason", "caption")
STATE_DIR = ".state"
STATE_VERSION = 1


@dataclass
class PdfResult:
    source: str
    status: str  # "built", "already built" or "failed"
    key: str = ""
    pages: int = 0
    pairs: int = 0
    rejected: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class BuildReport:
    out: Path
    results: List[PdfResult] = field(default_factory=list)
    pairs: int = 0
    rejected: int = 0

    @property
    def failed(self) -> List[PdfResult]:
        return [r for r in self.results if r.status == "failed"]


# ---------------------------------------------------------------------------------------------- files


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    # UTF-8 with BOM: spreadsheet programs then show Chinese captions correctly; pandas reads it either way
    write_text_atomic(path, "\ufeff" + frame.to_csv(index=False))


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pdf_key(path: Path, sha256: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("._") or "pdf"
    return f"{stem[:60]}-{sha256[:10]}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "_", text)


# ---------------------------------------------------------------------------------------------- one PDF


@dataclass
class _PdfWork:
    path: Path
    key: str
    out: Path
    cfg: EliteBuildCfg
    classifier: Optional[ModalityClassifier]
    duplicates: DuplicateIndex
    pairs: List[dict] = field(default_factory=list)
    rejected: List[dict] = field(default_factory=list)
    hashes: Dict[str, str] = field(default_factory=dict)  # hex dHash -> image path
    used_names: set = field(default_factory=set)

    def image_path(self, folder: str, page: int, figure: str, panel: str) -> str:
        base = f"{folder}/{self.key}/p{page:04d}_fig{_safe(figure)}{panel}"
        name, n = f"{base}.png", 1
        while name in self.used_names:  # the same figure number twice (a "continued" figure)
            n += 1
            name = f"{base}_{n}.png"
        self.used_names.add(name)
        return name

    def save(self, image: Image.Image, relative: str) -> None:
        target = self.out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.cfg.max_image_side and max(image.size) > self.cfg.max_image_side:
            image = image.copy()
            image.thumbnail((self.cfg.max_image_side, self.cfg.max_image_side), Image.LANCZOS)
        image.save(target, compress_level=1)  # lossless; level 1 is several times faster than the default 6

    def reject(self, page: int, figure: str, panel: str, reason: str, caption: str = "",
               image: Optional[Image.Image] = None) -> None:
        relative = ""
        if image is not None:
            relative = self.image_path("rejected", page, figure or "none", panel)
            self.save(image, relative)
        self.rejected.append(dict(source=self.path.name, page=page, figure=figure, panel=panel, image=relative,
                                  reason=reason, caption=caption))


_Pair = Tuple[Image.Image, str, str, str]  # picture, panel letter, caption, caption_zh


def _panel_pairs(images: List[Image.Image], caption: str, caption_zh: str) -> Tuple[List[_Pair], str]:
    """(image, panel letter, caption, caption_zh) for each panel of a figure, or ([], why not)."""
    primary = caption or caption_zh
    split = split_panels(primary)
    split_zh = split_panels(caption_zh) if caption and caption_zh else None
    if split is None:
        # one caption for the figure: every picture of it is described by the whole caption
        return [(im, "" if len(images) == 1 else chr(ord("A") + i), primary, caption_zh)
                for i, im in enumerate(images)], ""
    letters = list(split.panels)
    if len(images) == 1:  # a composite that does not split: the whole figure with the whole caption
        return [(images[0], "", primary, caption_zh)], ""
    if len(images) != len(letters):
        return [], (f"panel count mismatch: {len(images)} picture(s) but {len(letters)} panel caption(s) "
                    f"({', '.join(letters)})")
    zh_matches = split_zh is not None and list(split_zh.panels) == letters
    out = []
    for im, letter in zip(images, letters):
        text = split.caption_for(letter, chinese=not caption)
        if caption:
            zh = split_zh.caption_for(letter, chinese=True) if zh_matches else ""
        else:
            zh = text
        out.append((im, letter, text, zh))
    return out, ""


def _figure_pictures(work: _PdfWork, doc, fig: FigureCaption, page_images) -> List[Tuple[Image.Image, ImageStats]]:
    """The fundus pictures of a figure (with their statistics) in reading order: drawings/tables rejected,
    composites split."""
    page_no = fig.image_page or fig.page
    caption = fig.texts.get("en") or fig.texts.get("zh", "")
    placed = [page_images[i] for i in fig.images]
    order = reading_order([tuple(p.bbox) for p in placed])
    placed = sorted(placed, key=lambda p: order.index(tuple(p.bbox)))
    embedded = join_strips([tuple(p.bbox) for p in placed], [load_pixels(doc, page_no, p) for p in placed])
    pictures: List[Tuple[Image.Image, ImageStats]] = []
    for n, image in enumerate(embedded):
        stats = image_stats(image)
        reason = non_fundus_reason(stats, image.size, work.cfg)
        if reason:
            work.reject(page_no, fig.figure, f"#{n + 1}" if len(embedded) > 1 else "", reason, caption, image)
            continue
        boxes = panel_boxes(image, work.cfg)
        if len(boxes) <= 1:
            pictures.append((image, stats))
            continue
        for k, box in enumerate(boxes):
            piece = image.crop(box)
            piece_stats = image_stats(piece)
            reason = non_fundus_reason(piece_stats, piece.size, work.cfg)
            if reason:
                work.reject(page_no, fig.figure, f"#{n + 1}.{k + 1}", reason, caption, piece)
            else:
                pictures.append((piece, piece_stats))
    return pictures


def _join_languages(captions: List[FigureCaption]) -> List[FigureCaption]:
    """A figure's other-language caption printed elsewhere (another block or page) joins it by number;
    the caption-only group it came from is then consumed."""
    consumed = set()
    for fig in captions:
        if not fig.images:
            continue
        for lang in ("en", "zh"):
            if lang in fig.texts:
                continue
            for other in captions:
                if other is not fig and not other.images and other.figure == fig.figure and lang in other.texts \
                        and id(other) not in consumed:
                    fig.texts[lang] = other.texts[lang]
                    if set(other.texts) <= set(fig.texts):
                        consumed.add(id(other))
                    break
    return [c for c in captions if id(c) not in consumed]


def _process_pdf(work: _PdfWork) -> int:
    """Extract the pairs of one PDF into ``work``; returns its page count."""
    doc = open_pdf(work.path)
    try:
        require_text_layer(doc, work.path)
        pages = [read_page(doc, i, work.cfg.min_image_side_pt) for i in range(doc.page_count)]
        figures, orphans = match_document(pages, work.cfg.max_caption_gap)
        figures = _join_languages(figures)
        for fig in figures:
            caption, caption_zh = fig.texts.get("en", ""), fig.texts.get("zh", "")
            if not fig.images:
                page = pages[fig.page - 1]
                area = (0.0, max(fig.bbox[1] - work.cfg.max_caption_gap * page.height, 0.0), page.width, fig.bbox[3])
                reason = ("figure without an embedded image (vector drawing or table)"
                          if has_vector_art(doc, fig.page, area) else "caption without an image near it")
                work.reject(fig.page, fig.figure, "", reason, caption or caption_zh)
                continue
            page_no = fig.image_page or fig.page
            pictures = _figure_pictures(work, doc, fig, pages[page_no - 1].images)
            if not pictures:
                continue
            stats_of = {id(picture): stats for picture, stats in pictures}
            pairs, why_not = _panel_pairs([p for p, _ in pictures], caption, caption_zh)
            if why_not:
                for k, (picture, _) in enumerate(pictures):
                    work.reject(page_no, fig.figure, f"#{k + 1}", why_not, caption or caption_zh, picture)
                continue
            calls = classify_modalities([p[0] for p in pairs], [stats_of[id(p[0])] for p in pairs], work.classifier)
            for (picture, panel, text, zh), call in zip(pairs, calls):
                if call.modality not in FUNDUS_MODALITIES:
                    work.reject(page_no, fig.figure, panel, f"not a fundus image: {call.modality} "
                                f"({call.method}, confidence {call.confidence:.2f})", text, picture)
                    continue
                h = dhash(picture)
                first = work.duplicates.find(h)
                if first is not None:
                    work.reject(page_no, fig.figure, panel, f"duplicate of {first}", text)
                    continue
                relative = work.image_path("images", page_no, fig.figure, panel)
                work.save(picture, relative)
                work.duplicates.add(h, relative)
                work.hashes[format(h, "016x")] = relative
                work.pairs.append(dict(image=relative, caption=text, caption_zh=zh, modality=call.modality,
                                       source=work.path.name, page=page_no, figure=fig.figure, panel=panel,
                                       confidence=call.confidence))
        for page_no, i in orphans:
            image = load_pixels(doc, page_no, pages[page_no - 1].images[i])
            work.reject(page_no, "", f"#{i + 1}", "no figure caption near the image", "", image)
        return doc.page_count
    finally:
        doc.close()


# ---------------------------------------------------------------------------------------------- many PDFs


def _read_states(out: Path) -> Dict[str, dict]:
    states = {}
    for f in sorted((out / STATE_DIR).glob("*.json")):
        try:
            state = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            _logger.warning("%s: unreadable done-marker, its PDF will be rebuilt", f)
            continue
        if state.get("version") == STATE_VERSION:
            states[state["key"]] = state
    return states


def _write_outputs(out: Path, states: List[dict], cfg: EliteBuildCfg, report: BuildReport) -> None:
    pairs = pd.DataFrame([row for s in states for row in s["pairs"]], columns=list(ELITE_COLUMNS))
    rejected = pd.DataFrame([row for s in states for row in s["rejected"]], columns=list(REJECTED_COLUMNS))
    _atomic_csv(pairs, out / "elite.csv")
    for modality in FUNDUS_MODALITIES:
        _atomic_csv(pairs[pairs["modality"] == modality], out / f"elite_{modality}.csv")
    _atomic_csv(rejected, out / "rejected.csv")
    write_text_atomic(out / "review.html", write_review_page(pairs.to_dict("records"), ELITE_COLUMNS,
                                                        cfg.review_min_confidence, len(rejected)))
    write_text_atomic(out / "build_report.json", json.dumps(
        {"pairs": len(pairs), "rejected": len(rejected), "pdfs": [asdict(r) for r in report.results]},
        indent=2, ensure_ascii=False))
    report.pairs, report.rejected = len(pairs), len(rejected)


def build_elite(pdfs: Sequence[str | Path], out: str | Path, cfg: Optional[EliteBuildCfg] = None,
                classifier: Optional[ModalityClassifier] = None,
                on_result: Optional[Callable[[PdfResult], None]] = None) -> BuildReport:
    """Build (or resume building) an elite set from ``pdfs`` into ``out``.

    ``classifier``: images -> probabilities over CFP/FFA/OCT/other (zero-shot with a fundus-vlp model);
    None uses colour/texture statistics. A PDF that cannot be used is reported (``PdfResult.error``) and
    the others go on. ``on_result`` is called after each PDF (progress output).
    """
    fitz = require("fitz", "elite", "build-elite (atlas PDFs)")

    cfg = cfg or EliteBuildCfg()
    out = Path(out)
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    report = BuildReport(out)
    states = _read_states(out)
    duplicates = DuplicateIndex(cfg.dedup_max_distance)
    for state in states.values():
        for h, image in state["hashes"].items():
            duplicates.add(int(h, 16), image)
    order: List[str] = []
    display_errors = fitz.TOOLS.mupdf_display_errors()
    fitz.TOOLS.mupdf_display_errors(False)  # MuPDF's own stderr lines would duplicate our per-file message
    try:
        for pdf in pdfs:
            path = Path(pdf)
            start = time.perf_counter()
            try:
                if not path.is_file():
                    raise PdfError(path, "file not found")
                key = pdf_key(path, _file_sha256(path))
            except (PdfError, OSError) as exc:
                result = PdfResult(str(path), "failed", error=str(exc))
            else:
                if key in states:
                    s = states[key]
                    result = PdfResult(str(path), "already built", key, s["pages"], len(s["pairs"]), len(s["rejected"]))
                else:
                    result = _build_one(path, key, out, cfg, classifier, duplicates, states)
            result.seconds = round(time.perf_counter() - start, 3)
            if result.key and result.key not in order:
                order.append(result.key)
            report.results.append(result)
            ordered = [states[k] for k in order if k in states] + \
                [s for k, s in sorted(states.items()) if k not in order]  # PDFs of earlier runs last
            _write_outputs(out, ordered, cfg, report)
            if on_result:
                on_result(result)
    finally:
        fitz.TOOLS.mupdf_display_errors(display_errors)
    return report


def _build_one(path: Path, key: str, out: Path, cfg: EliteBuildCfg, classifier, duplicates: DuplicateIndex,
               states: Dict[str, dict]) -> PdfResult:
    for folder in ("images", "rejected"):  # leftovers of a run that stopped inside this PDF
        shutil.rmtree(out / folder / key, ignore_errors=True)
    work = _PdfWork(path, key, out, cfg, classifier, duplicates)
    start = time.perf_counter()
    try:
        pages = _process_pdf(work)
    # MuPDF raises RuntimeError subclasses; Pillow refuses decompression bombs
    except (PdfError, RuntimeError, ValueError, OSError, Image.DecompressionBombError) as exc:
        for folder in ("images", "rejected"):
            shutil.rmtree(out / folder / key, ignore_errors=True)
        for h in work.hashes:  # forget this PDF's images so a fixed rerun does not call them duplicates
            duplicates.forget(int(h, 16))
        message = str(exc) if isinstance(exc, PdfError) else f"{path}: {type(exc).__name__}: {exc}"
        return PdfResult(str(path), "failed", key, error=message)
    seconds = round(time.perf_counter() - start, 3)
    state = dict(version=STATE_VERSION, key=key, source=path.name, pages=pages, seconds=seconds,
                 pairs=work.pairs, rejected=work.rejected, hashes=work.hashes)
    write_text_atomic(out / STATE_DIR / f"{key}.json", json.dumps(state, ensure_ascii=False))
    states[key] = state
    return PdfResult(str(path), "built", key, pages, len(work.pairs), len(work.rejected), seconds)
