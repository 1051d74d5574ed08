"""Split a composite figure (several panels in one embedded image) at its white gutters.

Recursive XY-cut: cut at every interior band of paper-white columns, then cut each strip at its
paper-white rows, and so on until no piece has an interior gutter. White margins are trimmed; pieces
much smaller than the composite (a panel letter printed in the gutter) are dropped.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
from PIL import Image

from .config import EliteBuildCfg

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end exclusive


def _runs(mask: np.ndarray) -> List[Tuple[int, int]]:
    """[start, end) of the runs of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _trim(white: np.ndarray, box: Box) -> Box | None:
    x0, y0, x1, y1 = box
    ink = ~white[y0:y1, x0:x1]
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


def _cut(white: np.ndarray, box: Box, axis: int, min_gap: int) -> List[Box]:
    """Cut ``box`` at interior white bands across ``axis`` (1: columns, 0: rows)."""
    x0, y0, x1, y1 = box
    blank = white[y0:y1, x0:x1].all(axis=0 if axis == 1 else 1)
    cuts = [(s, e) for s, e in _runs(blank) if e - s >= min_gap and s > 0 and e < blank.size]
    if not cuts:
        return [box]
    pieces, start = [], 0
    for s, e in cuts:
        pieces.append((start, s))
        start = e
    pieces.append((start, blank.size))
    if axis == 1:
        return [(x0 + a, y0, x0 + b, y1) for a, b in pieces]
    return [(x0, y0 + a, x1, y0 + b) for a, b in pieces]


def panel_boxes(image: Image.Image, cfg: EliteBuildCfg) -> List[Box]:
    """Panel boxes in reading order (rows top to bottom, left to right within a row); one box when the
    image has no interior gutter."""
    rgb = np.asarray(image.convert("RGB"))
    white = (rgb >= cfg.gutter_level).all(axis=2)
    h, w = white.shape
    full = _trim(white, (0, 0, w, h))
    if full is None:
        return []
    min_gap = max(cfg.gutter_min_px, round(cfg.gutter_min_fraction * min(w, h)))
    todo, done = [full], []
    while todo:
        box = todo.pop(0)
        pieces = []
        for axis in (1, 0):  # columns first, then rows
            pieces = _cut(white, box, axis, min_gap)
            if len(pieces) > 1:
                break
        if len(pieces) == 1:
            done.append(box)
            continue
        todo.extend(t for t in (_trim(white, p) for p in pieces) if t is not None)
    fw, fh = full[2] - full[0], full[3] - full[1]
    kept = [b for b in done
            if b[2] - b[0] >= cfg.min_panel_fraction * fw and b[3] - b[1] >= cfg.min_panel_fraction * fh]
    return reading_order(kept)


def reading_order(boxes: List[Box]) -> List[Box]:
    """Rows by vertical overlap (a box joins a row when it overlaps the row's first box by half its
    height), rows top to bottom, boxes left to right."""
    rows: List[List[Box]] = []
    for b in sorted(boxes, key=lambda b: (b[1], b[0])):
        for row in rows:
            r = row[0]
            overlap = min(r[3], b[3]) - max(r[1], b[1])
            if overlap >= 0.5 * min(r[3] - r[1], b[3] - b[1]):
                row.append(b)
                break
        else:
            rows.append([b])
    return [b for row in rows for b in sorted(row, key=lambda b: b[0])]


def join_strips(boxes: List[Tuple[float, float, float, float]], images: List[Image.Image],
                tolerance: float = 1.0) -> List[Image.Image]:
    """Undo the slicing of one picture into abutting strips (some PDF producers store a large image as
    several): consecutive boxes (in reading order) that share their left and right edges and touch
    vertically, or share top and bottom and touch horizontally, are pasted back into one image."""
    groups: List[Tuple[str, list, list]] = []  # (direction, boxes, images)
    for box, image in zip(boxes, images):
        if groups:
            direction, gb, gi = groups[-1]
            last = gb[-1]
            below = abs(box[0] - last[0]) <= tolerance and abs(box[2] - last[2]) <= tolerance \
                and -tolerance <= box[1] - last[3] <= tolerance
            beside = abs(box[1] - last[1]) <= tolerance and abs(box[3] - last[3]) <= tolerance \
                and -tolerance <= box[0] - last[2] <= tolerance
            if (below and direction in ("", "v")) or (beside and direction in ("", "h")):
                groups[-1] = ("v" if below else "h", gb + [box], gi + [image])
                continue
        groups.append(("", [box], [image]))
    return [_paste(direction, gi) for direction, _, gi in groups]


def _paste(direction: str, images: List[Image.Image]) -> Image.Image:
    if len(images) == 1:
        return images[0]
    images = [im.convert("RGB") for im in images]
    if direction == "v":
        width = max(im.width for im in images)
        images = [im if im.width == width else im.resize((width, round(im.height * width / im.width))) for im in images]
        sheet = Image.new("RGB", (width, sum(im.height for im in images)))
        y = 0
        for im in images:
            sheet.paste(im, (0, y))
            y += im.height
        return sheet
    height = max(im.height for im in images)
    images = [im if im.height == height else im.resize((round(im.width * height / im.height), height)) for im in images]
    sheet = Image.new("RGB", (sum(im.width for im in images), height))
    x = 0
    for im in images:
        sheet.paste(im, (x, 0))
        x += im.width
    return sheet
