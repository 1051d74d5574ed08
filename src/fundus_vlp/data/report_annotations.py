"""Report-generation annotations: cases of one or more images with one report each.

Two forms are read:

* the FFA-IR annotation JSON, ``{"train" | "val" | "test": {case_id: {"Image_path": [relative paths...],
  "En_Report": str, ...}}}`` (other per-case keys, e.g. a Chinese report or lesion information, are
  ignored unless ``report_key`` names one of them); the splits are the file's own;
* an image-caption CSV in any form :func:`~fundus_vlp.data.dataframes.read_captions` accepts (the
  KeepFIT ``FFA.csv`` with the caption in a one-element ``categories`` list, or ``image, caption``): every
  row is a one-image case, and the rows are split into train/val/test here, seeded; images whose paths
  share a ``group_pattern`` match (e.g. the figure number of an atlas) stay in the same split. The report
  is the English caption, or the Chinese column (``caption_zh``, ``zh_caption`` or ``Cn_Report``) when
  ``report_key`` names a Chinese key; a row without that report is an error, as in the JSON form.

Errors name the file and the case (JSON) or row (CSV).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .dataframes import ZH_CAPTION_COLUMNS, DataFormatError, read_captions, resolve_image_path

__all__ = ["SPLITS", "ReportCase", "read_report_annotations", "split_rows", "csv_report_column"]

SPLITS = ("train", "val", "test")
# report keys that mean the English caption of a CSV (FFA-IR's key, ours, MM-Retinal's)
EN_REPORT_KEYS = ("En_Report", "caption", "en_caption")


@dataclass
class ReportCase:
    case_id: str
    split: str  # train | val | test
    images: List[Path]  # resolved, in the annotation's order
    report: str
    where: str  # "file, split/case" or "file, row N" for messages

    @property
    def n_images(self) -> int:
        return len(self.images)


def read_report_annotations(path: str | Path, image_root: str | Path, report_key: str = "En_Report",
                            seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
                            group_pattern: Optional[str] = None, check_files: bool = True) -> List[ReportCase]:
    """Cases of an FFA-IR JSON or an image-caption CSV, images resolved under ``image_root``.

    ``seed``, ``val_fraction``, ``test_fraction`` and ``group_pattern`` apply to the CSV form only (the
    JSON carries its own splits).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report annotations not found: {path}")
    if path.suffix.lower() == ".json":
        cases = _read_json(path, image_root, report_key)
    else:
        cases = _read_csv(path, image_root, report_key, seed, val_fraction, test_fraction, group_pattern)
    if check_files:
        missing = [(p, c.where) for c in cases for p in c.images if not p.is_file()]
        if missing:
            lines = "\n".join(f"  {p} ({w})" for p, w in missing[:5])
            more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DataFormatError(f"{len(missing)} images of {path} not found under {image_root}:\n{lines}{more}")
    return cases


def _read_json(path: Path, image_root, report_key: str) -> List[ReportCase]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise DataFormatError(f"{path}: expected an object of splits {SPLITS} -> cases")
    unknown = sorted(set(data) - set(SPLITS))
    if unknown:
        raise DataFormatError(f"{path}: unknown split(s) {unknown}; an FFA-IR annotation file has {list(SPLITS)}")
    cases: List[ReportCase] = []
    for split in SPLITS:
        block = data.get(split, {})
        if not isinstance(block, dict):
            raise DataFormatError(f"{path}: split {split!r} must map case ids to cases")
        for case_id, entry in block.items():
            loc = f"{path}, {split}/{case_id}"
            if not isinstance(entry, dict):
                raise DataFormatError(f"{loc}: a case must be an object with 'Image_path' and {report_key!r}")
            rels = entry.get("Image_path")
            if not isinstance(rels, list) or not rels or not all(isinstance(r, str) and r for r in rels):
                raise DataFormatError(f"{loc}: 'Image_path' must be a non-empty list of relative image paths")
            report = entry.get(report_key)
            if not isinstance(report, str) or not report.strip():
                raise DataFormatError(f"{loc}: missing or empty {report_key!r}")
            images = [_resolve(image_root, r, loc, k) for k, r in enumerate(rels)]
            cases.append(ReportCase(str(case_id), split, images, report.strip(), loc))
    if not cases:
        raise DataFormatError(f"{path}: no cases")
    return cases


def _resolve(image_root, rel: str, loc: str, k: int) -> Path:
    try:
        return resolve_image_path(image_root, rel, loc, k)
    except DataFormatError as exc:
        raise DataFormatError(f"{loc}, image {k}: {str(exc).split(': ', 1)[-1]}") from None


def csv_report_column(report_key: str) -> str:
    """The column of :func:`read_captions`' frame that holds the reports ``report_key`` asks for."""
    if report_key in EN_REPORT_KEYS:
        return "caption"
    if report_key in ZH_CAPTION_COLUMNS:
        return "caption_zh"
    raise ValueError(f"report_key={report_key!r}: a caption CSV's report is its English caption "
                     f"({' / '.join(EN_REPORT_KEYS)}) or its Chinese one ({' / '.join(ZH_CAPTION_COLUMNS)})")


def _read_csv(path: Path, image_root, report_key: str, seed: int, val_fraction: float, test_fraction: float,
              group_pattern: Optional[str]) -> List[ReportCase]:
    column = csv_report_column(report_key)
    frame = read_captions(path)
    if column not in frame.columns:
        raise DataFormatError(f"{path}: report_key={report_key!r} asks for the Chinese reports, but the file has "
                              f"no Chinese column (one of {list(ZH_CAPTION_COLUMNS)})")
    images, rows = list(frame["image"]), [int(r) for r in frame["row"]]
    reports = [r.strip() if isinstance(r, str) else "" for r in frame[column]]
    empty = [row for row, r in zip(rows, reports) if not r]
    if empty:
        listed = ", ".join(str(r) for r in empty[:10]) + (" ..." if len(empty) > 10 else "")
        raise DataFormatError(f"{path}: {len(empty)} row(s) without a {report_key!r} report (rows {listed}); "
                              f"every case needs its report")
    groups = [_group(p, group_pattern) for p in images]
    split = split_rows(groups, seed, val_fraction, test_fraction)
    return [ReportCase(f"row{row}", s, [_resolve(image_root, img, f"{path}, row {row}", 0)], rep, f"{path}, row {row}")
            for img, rep, row, s in zip(images, reports, rows, split)]


def _group(image: str, pattern: Optional[str]) -> str:
    if not pattern:
        return image
    m = re.search(pattern, image)
    return (m.group(1) if m.groups() else m.group(0)) if m else image


def split_rows(groups: Sequence[str], seed: int, val_fraction: float, test_fraction: float) -> List[str]:
    """A seeded train/val/test assignment of rows whose groups never straddle two splits."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction and test_fraction must be in (0, 1) and sum below 1, "
                         f"got {val_fraction} and {test_fraction}")
    uniq = list(dict.fromkeys(groups))
    order = np.random.default_rng(seed).permutation(len(uniq))
    n_test = max(1, int(round(test_fraction * len(uniq))))
    n_val = max(1, int(round(val_fraction * len(uniq))))
    if n_test + n_val >= len(uniq):
        raise ValueError(f"{len(uniq)} cases are too few to split into train, val and test")
    of: Dict[str, str] = {}
    for rank, g in enumerate(order):
        of[uniq[g]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return [of[g] for g in groups]
