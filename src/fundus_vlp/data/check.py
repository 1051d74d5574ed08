"""Validate a dataset up front: every dataframe parses, every image path is inside the root, exists and decodes.

The same checks run in three places: ``fundus-vlp check-data`` (everything, images decoded at reduced
size), ``pretrain --dry-run`` (the same, on the run's own sources) and the start of every pretraining
run (paths only: resolved, present, non-empty, readable; no decoding, so 10^5 rows take seconds).
Every problem of every file is collected; nothing stops at the first one.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import pandas as pd

from .dataframes import DataFormatError, Problem, read_any, where
from .images import BadImageError, check_file, verify_image

MAX_LISTED = 10_000  # problems kept in a report; the count covers all of them


def default_workers() -> int:
    """The cores this process may run on (a cluster job's affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class CheckReport:
    rows: int = 0
    images_ok: int = 0  # decoded (or, without decoding, present and readable)
    decoded: bool = True
    kinds: Dict[str, str] = field(default_factory=dict)  # dataframe -> categorical | captions
    classes: Counter = field(default_factory=Counter)
    problems: List[Problem] = field(default_factory=list)  # the first MAX_LISTED
    problem_count: int = 0
    skipped_empty_captions: int = 0

    def add(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.problem_count += 1
            if len(self.problems) < MAX_LISTED:
                self.problems.append(p)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def to_dict(self) -> dict:
        return {"rows": self.rows, "images_ok": self.images_ok, "decoded": self.decoded, "kinds": self.kinds,
                "classes": dict(self.classes.most_common()), "problem_count": self.problem_count,
                "skipped_empty_captions": self.skipped_empty_captions,
                "problems": [p.__dict__ for p in self.problems]}


def _check_one(path: Path, decode: bool, max_pixels: Optional[int]) -> Optional[str]:
    try:
        if decode:
            verify_image(path, None, max_pixels)
        else:
            check_file(path)
    except BadImageError as exc:
        return exc.reason
    except Exception as exc:  # an unexpected decoder failure is one bad image, not a lost report
        return f"{type(exc).__name__}: {exc}"
    return None


def check_image_rows(frame: pd.DataFrame, root: str | Path, decode: bool = False, workers: Optional[int] = None,
                     max_pixels: Optional[int] = None, progress: bool = False) -> Tuple[List[Problem], List[int]]:
    """Check the image of every row of ``frame`` (columns image, source, row) under ``root``.

    Returns ``(problems, bad_positions)``: one problem per bad row, and the frame positions of those rows.
    Each distinct file is checked once, however many rows name it. A prepared cache as ``root`` is read
    through its manifest, as training does.
    """
    from tqdm import tqdm

    from .prepare import CacheIndex

    index = CacheIndex(root)
    resolved: List[Optional[Path]] = []
    problems_at: Dict[int, Problem] = {}
    for pos, (image, source, row) in enumerate(zip(frame["image"], frame["source"], frame["row"])):
        try:
            resolved.append(index.resolve(image, source, row))
        except (DataFormatError, BadImageError) as exc:
            reason = exc.reason if isinstance(exc, BadImageError) else str(exc).split(": ", 1)[-1]
            problems_at[pos] = Problem(where(source, row), image, reason)
            resolved.append(None)
    unique = list(dict.fromkeys(p for p in resolved if p is not None))
    workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda p: _check_one(p, decode, max_pixels), unique)
        verdict = dict(zip(unique, tqdm(results, total=len(unique), disable=not progress,
                                        desc="decoding images" if decode else "checking files")))
    for pos, path in enumerate(resolved):
        if path is not None and verdict[path] is not None:
            image, source, row = frame["image"].iat[pos], frame["source"].iat[pos], frame["row"].iat[pos]
            problems_at[pos] = Problem(where(source, row), image, verdict[path])
    bad = sorted(problems_at)
    return [problems_at[i] for i in bad], bad


def _row_number(problem: Problem) -> int:
    tail = problem.where.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def file_problem(df_path: str | Path, exc: Exception) -> Problem:
    """A whole file that cannot be used: the message without the repeated file name."""
    msg = str(exc)
    if msg.startswith(str(df_path)):
        msg = msg[len(str(df_path)):].lstrip(":, ")
    return Problem(str(df_path), "", msg)


def check_sources(sources: Sequence[Tuple[str | Path, str | Path, str]], workers: Optional[int] = None,
                  decode: bool = True, progress: bool = True, encoding: str = "utf-8",
                  on_empty_caption: str = "error", max_pixels: Optional[int] = None) -> CheckReport:
    """Check ``(dataframe, image root, kind)`` triples; kind is auto, categorical or captions."""
    report = CheckReport(decoded=decode)
    for df_path, root, kind in sources:
        df_path = Path(df_path)
        found: List[Problem] = []
        try:
            kind, frame = read_any(df_path, kind, encoding, on_empty_caption, problems=found)
        except DataFormatError as exc:
            report.add([file_problem(df_path, exc)])
            continue
        report.kinds[str(df_path)] = kind
        report.rows += len(frame) + len(found) + frame.attrs.get("skipped_empty_captions", 0)
        report.skipped_empty_captions += frame.attrs.get("skipped_empty_captions", 0)
        if kind == "categorical":
            report.classes.update(c for cats in frame["categories"] for c in cats)
        bad, positions = check_image_rows(frame, root, decode, workers, max_pixels, progress)
        report.add(sorted(found + bad, key=_row_number))  # in file order, whatever found them
        report.images_ok += len(frame) - len(positions)
    return report


def check_dataset(root: str | Path, dataframes: Sequence[str | Path], kind: str = "auto",
                  workers: Optional[int] = None, decode: bool = True, progress: bool = True,
                  encoding: str = "utf-8", on_empty_caption: str = "error",
                  max_pixels: Optional[int] = None) -> CheckReport:
    """Parse the dataframes and check every image (decoded with ``decode``, else present and readable);
    collect problems instead of stopping. ``workers`` defaults to the usable core count."""
    return check_sources([(df, root, kind) for df in dataframes], workers, decode, progress, encoding,
                         on_empty_caption, max_pixels)
