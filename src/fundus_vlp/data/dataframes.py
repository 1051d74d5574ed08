"""Readers for the real data formats (docs/reference.md#dataframe-formats).

(a) categorical dataframes ``image, atributes, categories`` with Python-literal lists (parsed with
``ast.literal_eval``, never ``eval``); (b) image–caption files in three forms; (c) a folder of ``.txt``
files as an MLM corpus. Every error names the file and the row (1-based data row, header excluded).
All returned frames carry ``source`` and ``row`` columns so later errors can point back to them.
"""
from __future__ import annotations

import ast
from pathlib import Path, PurePosixPath
from typing import Iterable, List, Sequence, Tuple

import pandas as pd

CATEGORICAL_COLUMNS = ("image", "atributes", "categories")
# Chinese caption/report columns, first found wins: ours, MM-Retinal's, FFA-IR's
ZH_CAPTION_COLUMNS = ("caption_zh", "zh_caption", "Cn_Report")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm")


class DataFormatError(ValueError):
    """A dataframe that does not have the expected columns or values; the message says where."""


def where(source: str | Path, row: int) -> str:
    return f"{source}, row {row}"


def _read_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: dataframe not found")
    try:
        # keep_default_na=False: an empty caption stays "" (reported as empty) instead of becoming NaN
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(f"{path}: not a readable CSV ({exc})") from exc
    return frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed:") or c == ""], errors="ignore")


def parse_list(text: str, source: str | Path, row: int, column: str) -> List[str]:
    """A Python-literal list of strings, e.g. ``"['glaucoma', 'a disease']"``; ``""`` counts as empty."""
    text = text.strip()
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise DataFormatError(f"{where(source, row)}: column {column!r} is not a Python list literal: {text[:80]!r}") from exc
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(f"{where(source, row)}: column {column!r} must be a list of strings, got {text[:80]!r}")
    return [v for v in value]


def _require_columns(frame: pd.DataFrame, path: Path, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")


def _add_provenance(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    frame = frame.copy()
    frame["source"] = str(path)
    frame["row"] = range(1, len(frame) + 1)
    return frame


def read_categorical(path: str | Path) -> pd.DataFrame:
    """Read ``image, atributes, categories`` (the misspelling is the real column name)."""
    path = Path(path)
    frame = _read_csv(path)
    _require_columns(frame, path, CATEGORICAL_COLUMNS)
    frame = _add_provenance(frame[list(CATEGORICAL_COLUMNS)], path)
    for i, image in enumerate(frame["image"], start=1):
        if not image.strip():
            raise DataFormatError(f"{where(path, i)}: empty image path")
    frame["atributes"] = [parse_list(t, path, i, "atributes") for i, t in enumerate(frame["atributes"], start=1)]
    frame["categories"] = [parse_list(t, path, i, "categories") for i, t in enumerate(frame["categories"], start=1)]
    return frame.reset_index(drop=True)


def read_captions(path: str | Path, on_empty: str = "error") -> pd.DataFrame:
    """Image–caption pairs, returned as columns ``image, caption`` (+ ``caption_zh`` when the file has
    Chinese text, + provenance).

    Accepted forms: ``image, caption``; the MM-Retinal raw release ``Image_ID, en_caption`` (no file
    extension: ``image`` is the bare id, resolved against the disk by ``resolve_image_path``); and the
    KeepFIT-FFA form ``image, atributes, categories`` with the caption in a one-element list.
    A Chinese column (``caption_zh``, MM-Retinal's ``zh_caption`` or FFA-IR's ``Cn_Report``) becomes
    ``caption_zh``; with one, the English column may be absent or empty in a row (a row needs one of them).
    ``on_empty``: "error" (default) or "skip" rows whose caption is empty (in every language).
    """
    path = Path(path)
    frame = _read_csv(path)
    cols = set(frame.columns)
    zh_column = next((c for c in ZH_CAPTION_COLUMNS if c in cols), None)
    if {"image", "caption"} <= cols or ({"image"} <= cols and zh_column and "categories" not in cols):
        images = list(frame["image"])
        captions = list(frame["caption"]) if "caption" in cols else [""] * len(frame)
    elif {"Image_ID", "en_caption"} <= cols or ({"Image_ID"} <= cols and zh_column):
        images = list(frame["Image_ID"])
        captions = list(frame["en_caption"]) if "en_caption" in cols else [""] * len(frame)
    elif set(CATEGORICAL_COLUMNS) <= cols:
        images = list(frame["image"])
        captions = []
        for i, text in enumerate(frame["categories"], start=1):
            items = parse_list(text, path, i, "categories")
            if len(items) > 1:
                raise DataFormatError(f"{where(path, i)}: caption form expects one caption in 'categories', got {len(items)}")
            captions.append(items[0] if items else "")
    else:
        raise DataFormatError(
            f"{path}: not a caption file; expected columns (image, caption), (Image_ID, en_caption) or "
            f"(image, atributes, categories), optionally with one of {list(ZH_CAPTION_COLUMNS)}; "
            f"found {list(frame.columns)}"
        )
    columns = {"image": images, "caption": [c.strip() for c in captions]}
    if zh_column is not None:
        columns["caption_zh"] = [c.strip() for c in frame[zh_column]]
    out = _add_provenance(pd.DataFrame(columns), path)
    empty = (out["caption"] == "") & ((out["caption_zh"] == "") if zh_column is not None else True)
    if empty.any():
        rows = out.loc[empty, "row"].tolist()
        if on_empty == "error":
            raise DataFormatError(f"{path}: empty caption in row(s) {rows[:10]}{' ...' if len(rows) > 10 else ''} "
                                  f"({len(rows)} in all); fix them or pass on_empty='skip'")
        out = out[~empty]
    bad = out["image"].str.strip() == ""
    if bad.any():
        raise DataFormatError(f"{where(path, int(out.loc[bad, 'row'].iloc[0]))}: empty image path")
    return out.reset_index(drop=True)


def read_any(path: str | Path, kind: str = "auto") -> Tuple[str, pd.DataFrame]:
    """``(kind, frame)`` of a dataframe whose kind is ``categorical``, ``captions``, or ``auto``: categorical
    if it parses as such, else captions (the categorical error is raised when neither fits)."""
    if kind == "categorical":
        return "categorical", read_categorical(path)
    if kind == "captions":
        return "captions", read_captions(path)
    try:
        return "categorical", read_categorical(path)
    except DataFormatError as first:
        try:
            return "captions", read_captions(path)
        except DataFormatError:
            raise first from None


def read_corpus(paths: Iterable[str | Path]) -> List[str]:
    """Paragraphs (split on blank lines) from ``.txt`` files or folders of them, in sorted file order."""
    files: List[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(p.rglob("*.txt")))
        elif p.is_file():
            files.append(p)
        else:
            raise DataFormatError(f"{p}: corpus path not found")
    if not files:
        raise DataFormatError(f"no .txt files found in {[str(p) for p in paths]}")
    paragraphs: List[str] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8-sig")  # a byte-order mark is not text
        except UnicodeDecodeError as exc:
            raise DataFormatError(f"{f}: not UTF-8 text ({exc})") from exc
        paragraphs.extend(" ".join(block.split()) for block in text.split("\n\n") if block.strip())
    if not paragraphs:
        raise DataFormatError(f"corpus {[str(f) for f in files]} contains no text")
    return paragraphs


def resolve_image_path(root: str | Path, relative: str, source: str | Path = "?", row: int = 0) -> Path:
    """Join a dataframe path to the data root, rejecting absolute paths and paths that escape the root.

    A path without an extension (MM-Retinal ``Image_ID``) is resolved by probing the disk for the
    known image extensions, as the official loader does.
    """
    rel = PurePosixPath(relative.replace("\\", "/"))
    if rel.is_absolute() or Path(relative).is_absolute() or (len(relative) > 1 and relative[1] == ":"):
        raise DataFormatError(f"{where(source, row)}: image path {relative!r} is absolute; paths must be relative to the data root")
    root = Path(root).resolve()
    candidate = (root / Path(*rel.parts)).resolve() if rel.parts else root
    try:
        candidate.relative_to(root)
    except ValueError:
        raise DataFormatError(f"{where(source, row)}: image path {relative!r} escapes the data root {root}") from None
    if candidate.suffix.lower() not in IMAGE_EXTENSIONS and not candidate.exists():
        for ext in IMAGE_EXTENSIONS:
            probe = candidate.with_name(candidate.name + ext)
            if probe.exists():
                return probe
    return candidate


def dataset_key(image_path: str) -> str:
    """First path component = the source dataset (used for balanced sampling)."""
    parts = PurePosixPath(image_path.replace("\\", "/")).parts
    return parts[0] if len(parts) > 1 else ""
