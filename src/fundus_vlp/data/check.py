"""Validate a dataset up front: every dataframe parses, every image path is inside the root and decodes."""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .dataframes import DataFormatError, read_any, resolve_image_path, where
from .images import BadImageError, load_image


@dataclass
class Problem:
    where: str
    path: str
    reason: str


@dataclass
class CheckReport:
    rows: int = 0
    images_ok: int = 0
    kinds: Dict[str, str] = field(default_factory=dict)  # dataframe -> categorical | captions
    classes: Counter = field(default_factory=Counter)
    problems: List[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"rows": self.rows, "images_ok": self.images_ok, "kinds": self.kinds,
                "classes": dict(self.classes.most_common()),
                "problems": [p.__dict__ for p in self.problems]}


def _check_image(root: Path, image: str, source: str, row: int) -> Tuple[str, str, str] | None:
    loc = where(source, row)
    try:
        load_image(resolve_image_path(root, image, source, row), loc)
    except (BadImageError, DataFormatError) as exc:
        reason = exc.reason if isinstance(exc, BadImageError) else str(exc).split(": ", 1)[-1]
        return loc, image, reason
    return None


def check_dataset(root: str | Path, dataframes: Sequence[str | Path], kind: str = "auto", workers: int = 8,
                  decode: bool = True, progress: bool = True) -> CheckReport:
    """Parse the dataframes and (with ``decode``) open every image; collect problems instead of stopping."""
    from tqdm import tqdm

    report = CheckReport()
    root = Path(root)
    jobs = []
    for df_path in dataframes:
        df_path = Path(df_path)
        try:
            found, frame = read_any(df_path, kind)
        except DataFormatError as exc:
            report.problems.append(Problem(str(df_path), "", str(exc)))
            continue
        report.kinds[str(df_path)] = found
        report.rows += len(frame)
        if found == "categorical":
            report.classes.update(c for cats in frame["categories"] for c in cats)
        jobs += list(zip(frame["image"], frame["source"], frame["row"]))
    if decode and jobs:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(lambda j: _check_image(root, *j), jobs)
            for res in tqdm(results, total=len(jobs), desc="checking images", disable=not progress):
                if res is None:
                    report.images_ok += 1
                else:
                    report.problems.append(Problem(*res))
    return report
