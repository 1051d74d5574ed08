"""Multi-image FFA cases with case-level reports, written in the FFA-IR annotation layout.

A case is one patient: one or two imaged eyes, one to three angiogram frames per eye. The frames of an
eye share one scene (same vessels, disc and lesions, as in a real angiographic sequence) and differ in
exposure, illumination and noise; the report describes what the frames show (:func:`.text.make_report`).
The annotation file has the FFA-IR structure::

    {"train" | "val" | "test": {case_id: {"Image_path": [relative paths...], "En_Report": str,
                                          "Cn_Report": str (bilingual world only),
                                          "Conditions": [per eye], "Eyes": [...]}}}

Every case is an independent job seeded by ``(seed, stream, index)``, like the rest of the world, and uses
its own random stream: adding the cases leaves every other generated file unchanged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .fundus import build_scene
from .ontology import conditions_for_modality
from .records import ZH_STREAM, stream_id
from .render_ffa import colour_ffa
from .scene import Case, sample_case
from .text import make_report
from .text_zh import make_report_zh

__all__ = ["FFACaseJob", "SPLIT_CYCLE", "ffa_case_jobs", "make_ffa_case", "write_annotations"]

IMAGE_DIR = "demo_ffa_reports"
# Case i goes to SPLIT_CYCLE[i % 7]: conditions cycle through the cases, so every split sees every condition.
SPLIT_CYCLE = ("train", "train", "train", "train", "train", "val", "test")
MAX_FRAMES_PER_EYE = 3
FELLOW_EYE_P = 0.6  # both eyes imaged
FELLOW_NORMAL_P = 0.3  # the fellow eye of a diseased eye is normal (unilateral disease)


@dataclass(frozen=True)
class FFACaseJob:
    case_id: str
    split: str
    condition: str
    seed: tuple[int, ...]


def ffa_case_jobs(seed: int, n_cases: int) -> list[FFACaseJob]:
    """``n_cases`` cases; conditions (every FFA condition, normal included) cycled in a seeded order."""
    names = conditions_for_modality("FFA")
    sid = stream_id("ffa_reports")
    order = np.random.default_rng([seed, sid, 1 << 30]).permutation(len(names))
    return [FFACaseJob(f"case_{i:05d}", SPLIT_CYCLE[i % len(SPLIT_CYCLE)], names[int(order[i % len(names)])],
                       (seed, sid, i)) for i in range(n_cases)]


def _eyes(job: FFACaseJob, rng: np.random.Generator) -> list[Case]:
    first = sample_case(job.condition, "FFA", rng)
    u = rng.random(2)  # fixed number of draws whatever the branches
    if u[0] >= FELLOW_EYE_P:
        return [first]
    fellow_condition = "normal" if job.condition != "normal" and u[1] < FELLOW_NORMAL_P else job.condition
    other = "left" if first.eye == "right" else "right"
    fellow = replace(sample_case(fellow_condition, "FFA", rng), eye=other)
    return sorted([first, fellow], key=lambda c: c.eye != "right")  # right eye first, as reports are read


def make_ffa_case(job: FFACaseJob, root: Path, image_size: int) -> dict[str, Any]:
    """Render the frames of one case under ``root`` and return its annotation entry."""
    rng = np.random.default_rng(list(job.seed))
    eyes = _eyes(job, rng)
    paths = []
    for case in eyes:
        scene = build_scene(case, image_size, rng)
        for k in range(int(rng.integers(1, MAX_FRAMES_PER_EYE + 1))):
            rel = f"{IMAGE_DIR}/{job.case_id}/{case.eye}_{k}.png"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(colour_ffa(case, scene, rng)).save(path, format="PNG", compress_level=6)
            paths.append(rel)
    report = make_report(eyes, rng)
    # its own random stream: the English report and the frames are those of an English-only world
    report_zh = make_report_zh(eyes, np.random.default_rng([*job.seed, ZH_STREAM]))
    return {"Image_path": paths, "En_Report": report, "Cn_Report": report_zh,
            "Conditions": ["|".join(c.conditions) for c in eyes], "Eyes": [c.eye for c in eyes]}


def write_annotations(jobs: list[FFACaseJob], entries: list[dict[str, Any]], path: Path,
                      chinese: bool = False) -> None:
    """The FFA-IR JSON: split -> case id -> entry (splits and cases in a fixed order, byte-reproducible);
    ``Cn_Report`` only in a bilingual world."""
    out: dict[str, dict[str, Any]] = {"train": {}, "val": {}, "test": {}}
    for job, entry in zip(jobs, entries):
        out[job.split][job.case_id] = entry if chinese else {k: v for k, v in entry.items() if k != "Cn_Report"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
