"""Readers for the real data formats (docs/reference.md#dataframe-formats).

(a) categorical dataframes ``image, atributes, categories`` with Python-literal lists (parsed with
``ast.literal_eval``, never ``eval``); (b) image–caption files in three forms; (c) a folder of ``.txt``
files as an MLM corpus. Every error names the file and the row (1-based data row, header excluded).
All returned frames carry ``source`` and ``row`` columns so later errors can point back to them.
"""
from __future__ import annotations

import ast
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, List, Optional, Sequence, Tuple

import pandas as pd

CATEGORICAL_COLUMNS = ("image", "atributes", "categories")
# Chinese caption/report columns, first found wins: ours, MM-Retinal's, FFA-IR's
ZH_CAPTION_COLUMNS = ("caption_zh", "zh_caption", "Cn_Report")
CAPTION_COLUMN_SETS = (("image", "caption"), ("Image_ID", "en_caption"),
                       *(("image", zh) for zh in ZH_CAPTION_COLUMNS), *(("Image_ID", zh) for zh in ZH_CAPTION_COLUMNS))
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm", ".webp")
KINDS = ("auto", "categorical", "captions")
ON_EMPTY_CAPTION = ("error", "skip")
ON_BAD_IMAGE = ("error", "skip")
MAX_LISTED_IN_ERROR = 10  # problems quoted in one exception message (the count covers all of them)


class DataFormatError(ValueError):
    """A dataframe that does not have the expected columns or values; the message says where."""


@dataclass
class Problem:
    """One bad row (or a whole bad file, ``row`` 0): where it is, the image path it names, what is wrong."""

    where: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path + ': ' if self.path else ''}{self.reason}"


def where(source: str | Path, row: int) -> str:
    return f"{source}, row {row}"


def problems_message(problems: Sequence[Problem], hint: str = "") -> str:
    """All problems as one message: the first few quoted, the rest counted."""
    listed = "\n  ".join(str(p) for p in problems[:MAX_LISTED_IN_ERROR])
    more = f"\n  ... and {len(problems) - MAX_LISTED_IN_ERROR} more" if len(problems) > MAX_LISTED_IN_ERROR else ""
    return f"{len(problems)} problem(s) in the data:\n  {listed}{more}{hint}"


def _finish(problems: List[Problem], sink: Optional[List[Problem]]) -> None:
    """Hand the problems of one file to the caller's list, or raise them all at once."""
    if sink is not None:
        sink.extend(problems)
    elif problems:
        raise DataFormatError(problems_message(problems))


def _python_encoding(encoding: str) -> str:
    # "utf-8" also accepts a byte-order mark (Excel writes one); any other name is passed to Python as is
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def _suggest_encoding(raw: bytes) -> str:
    """gb18030 for Chinese text (non-ASCII bytes come in runs: two or four per character), else latin-1
    (accented letters: one non-ASCII byte between ASCII ones)."""
    import re

    if all(len(run) == 1 for run in re.findall(rb"[\x80-\xff]+", raw)):
        return "latin-1"
    try:
        text = raw.decode("gb18030")
        if any("\u4e00" <= ch <= "\u9fff" for ch in text):
            return "gb18030"
    except UnicodeDecodeError:
        pass
    return "latin-1"


def _decode(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode(_python_encoding(encoding))
    except LookupError:
        raise DataFormatError(f"{path}: unknown encoding {encoding!r} (data.encoding / --encoding)") from None
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        row = f" (data row {line - 1})" if line > 1 else " (the header)"
        suggestion = _suggest_encoding(raw)
        raise DataFormatError(
            f"{path}, line {line}{row}, column {column}: byte 0x{raw[exc.start]:02x} is not valid {encoding}; "
            f"the file looks like {suggestion}: pass --encoding {suggestion} (or data.encoding={suggestion}), "
            f"or re-save it as UTF-8") from None


def _read_csv(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """A CSV as strings; whole-file problems (missing, undecodable, duplicate columns, no rows) raise."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: dataframe not found")
    text = _decode(path, encoding)
    if not text.strip():
        raise DataFormatError(f"{path}: empty file (no header, no rows)")
    header = next(csv.reader(io.StringIO(text)), [])
    names = [h.strip() for h in header]
    dups = sorted({n for n in names if n and names.count(n) > 1})
    if dups:  # pandas would rename the second one `name.1` and one of them would be ignored silently
        raise DataFormatError(f"{path}: duplicate column(s) {dups} in the header; keep one of each")
    try:
        # keep_default_na=False: an empty caption stays "" (reported as empty) instead of becoming NaN
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(f"{path}: not a readable CSV ({exc})") from exc
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed:") or c == ""], errors="ignore")
    if len(frame) == 0:
        raise DataFormatError(f"{path}: no data rows (only a header)")
    return frame


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


def _row_problem(exc: DataFormatError, source: Path, row: int) -> Problem:
    return Problem(where(source, row), "", str(exc).split(": ", 1)[-1])


def _require_columns(frame: pd.DataFrame, path: Path, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")


def _add_provenance(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    frame = frame.copy()
    frame["source"] = str(path)
    frame["row"] = range(1, len(frame) + 1)
    return frame


def detect_kind(columns: Iterable[str]) -> Optional[str]:
    """``captions`` for the caption column sets, ``categorical`` for ``image, atributes, categories``, else None.

    The KeepFIT-FFA caption form shares the categorical columns; it is read as captions only when asked
    (``kind="captions"``, as the elite sources of a run are)."""
    cols = set(columns)
    if any(set(pair) <= cols for pair in CAPTION_COLUMN_SETS):
        return "captions"
    if set(CATEGORICAL_COLUMNS) <= cols:
        return "categorical"
    return None


def read_categorical(path: str | Path, encoding: str = "utf-8", problems: Optional[List[Problem]] = None,
                     frame: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Read ``image, atributes, categories`` (the misspelling is the real column name).

    Every bad row of the file is found: with ``problems`` (a list) they are appended there and the rows
    dropped; without, one ``DataFormatError`` lists them all."""
    path = Path(path)
    frame = _read_csv(path, encoding) if frame is None else frame
    _require_columns(frame, path, CATEGORICAL_COLUMNS)
    frame = _add_provenance(frame[list(CATEGORICAL_COLUMNS)], path)
    found: List[Problem] = []
    keep, atributes, categories = [], [], []
    for i, (image, atr, cat) in enumerate(zip(frame["image"], frame["atributes"], frame["categories"]), start=1):
        if not image.strip():
            found.append(Problem(where(path, i), "", "empty image path"))
            continue
        try:
            parsed = parse_list(atr, path, i, "atributes"), parse_list(cat, path, i, "categories")
        except DataFormatError as exc:
            found.append(_row_problem(exc, path, i))
            continue
        keep.append(i - 1)
        atributes.append(parsed[0])
        categories.append(parsed[1])
    _finish(found, problems)
    frame = frame.iloc[keep].reset_index(drop=True)
    frame["atributes"] = atributes
    frame["categories"] = categories
    return frame


def read_captions(path: str | Path, on_empty: str = "error", encoding: str = "utf-8",
                  problems: Optional[List[Problem]] = None, frame: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Image–caption pairs, returned as columns ``image, caption`` (+ ``caption_zh`` when the file has
    Chinese text, + provenance).

    Accepted forms: ``image, caption``; the MM-Retinal raw release ``Image_ID, en_caption`` (no file
    extension: ``image`` is the bare id, resolved against the disk by ``resolve_image_path``); and the
    KeepFIT-FFA form ``image, atributes, categories`` with the caption in a one-element list.
    A Chinese column (``caption_zh``, MM-Retinal's ``zh_caption`` or FFA-IR's ``Cn_Report``) becomes
    ``caption_zh``; with one, the English column may be absent or empty in a row (a row needs one of them).
    ``on_empty`` (``data.on_empty_caption``): "error" (default: every row with no caption in any language is a
    problem) or "skip" (the rows are dropped; their number is in ``frame.attrs["skipped_empty_captions"]``).
    Bad rows are collected as in ``read_categorical``.
    """
    if on_empty not in ON_EMPTY_CAPTION:
        raise ValueError(f"on_empty_caption must be one of {ON_EMPTY_CAPTION}, got {on_empty!r}")
    path = Path(path)
    frame = _read_csv(path, encoding) if frame is None else frame
    cols = set(frame.columns)
    found: List[Problem] = []
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
            try:
                items = parse_list(text, path, i, "categories")
            except DataFormatError as exc:
                found.append(_row_problem(exc, path, i))
                items = [None]
            if len(items) > 1:
                found.append(Problem(where(path, i), "",
                                     f"caption form expects one caption in 'categories', got {len(items)}"))
                items = [None]
            captions.append(items[0] if items else "")
    else:
        raise DataFormatError(
            f"{path}: not a caption file; expected columns (image, caption), (Image_ID, en_caption) or "
            f"(image, atributes, categories), optionally with one of {list(ZH_CAPTION_COLUMNS)}; "
            f"found {list(frame.columns)}"
        )
    captions_zh = [c.strip() if isinstance(c, str) else "" for c in frame[zh_column]] if zh_column else None
    keep, skipped = [], 0
    for i, (image, caption) in enumerate(zip(images, captions), start=1):
        if caption is None:
            continue  # already reported
        has_text = bool(caption.strip()) or bool(captions_zh and captions_zh[i - 1])
        if not image.strip():
            found.append(Problem(where(path, i), "", "empty image path"))
        elif not has_text:
            if on_empty == "skip":
                skipped += 1
            else:
                found.append(Problem(where(path, i), image, "empty caption (set data.on_empty_caption=skip to "
                                                            "drop such rows)"))
        else:
            keep.append(i - 1)
    _finish(found, problems)
    columns = {"image": images, "caption": [(c or "").strip() for c in captions]}
    if captions_zh is not None:
        columns["caption_zh"] = captions_zh
    out = _add_provenance(pd.DataFrame(columns), path)
    out = out.iloc[keep].reset_index(drop=True)
    out.attrs["skipped_empty_captions"] = skipped
    return out


def read_any(path: str | Path, kind: str = "auto", encoding: str = "utf-8", on_empty_caption: str = "error",
             problems: Optional[List[Problem]] = None) -> Tuple[str, pd.DataFrame]:
    """``(kind, frame)`` of a dataframe whose kind is ``categorical``, ``captions``, or ``auto``: decided from
    the columns (``detect_kind``), so a caption file's problems are reported as caption problems."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    frame = _read_csv(path, encoding)
    if kind == "auto":
        kind = detect_kind(frame.columns) or ""
        if not kind:
            raise DataFormatError(
                f"{path}: unknown dataframe kind; expected columns (image, atributes, categories) for labels or "
                f"(image, caption) / (Image_ID, en_caption) for captions; found {list(frame.columns)}")
    if kind == "categorical":
        return kind, read_categorical(path, encoding, problems, frame=frame)
    return kind, read_captions(path, on_empty_caption, encoding, problems, frame=frame)


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

    Whether a path escapes is decided on its text, normalised but not resolved: ``a/../b`` stays inside,
    ``../b`` does not, and a symbolic link inside the root (a big dataset linked in from another disk) is
    followed when the file is read. A path without an extension (MM-Retinal ``Image_ID``) is resolved by
    probing the disk for the known image extensions, as the official loader does.
    """
    text = relative.replace("\\", "/")
    if text.startswith("/") or Path(relative).is_absolute() or (len(relative) > 1 and relative[1] == ":"):
        raise DataFormatError(f"{where(source, row)}: image path {relative!r} is absolute; paths must be relative to the data root")
    parts: List[str] = []
    for part in PurePosixPath(text).parts:
        if part == "..":
            if not parts:
                raise DataFormatError(f"{where(source, row)}: image path {relative!r} escapes the data root {root}")
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    candidate = Path(os.path.abspath(root)).joinpath(*parts)
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
