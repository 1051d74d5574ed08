"""What each row of the demo world contains: public sources and their labellers, elite/retrieval pairs and
evaluation sets.

Every row is an independent *job* with its own seed ``(cfg.seed, stream, *index)``; :func:`make_item` turns a
job into an image file plus a CSV row. Jobs do not share random state, so the output is the same whatever
the order or the number of worker processes.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .ontology import CONDITIONS, SEEN_CONDITIONS, conditions_for_modality
from .fundus import build_scene
from .render import render_case
from .render_cfp import colour_cfp
from .scene import Case, sample_case
from .segmentation import SEGMENTATION_CONDITIONS, label_map
from .text import make_caption
from .text_zh import make_caption_zh

ZH_STREAM = 0x7A68  # the Chinese-caption random stream of each job ("zh")

__all__ = ["PUBLIC_SOURCES", "EXPERIMENTS", "EXPERIMENT_DESCRIPTIONS", "Job", "make_item", "stream_id", "allocate",
           "public_jobs", "paired_jobs", "eval_jobs", "segmentation_jobs", "mask_path"]

_NORMAL, _GLAUCOMA, _AMD, _HTN = "normal", "glaucoma", "age related macular degeneration", "hypertensive retinopathy"
_MILD, _MOD, _SEV = "mild diabetic retinopathy", "moderate diabetic retinopathy", "severe diabetic retinopathy"

# Public sources mimic the label granularity of the real pre-training sets: a DR-grading set (EyePACS-like),
# a lesion set (IDRiD / DR1-2-like), a glaucoma set (LAG-like) and a multi-disease set (RFMiD / ODIR-like,
# with free text). Only *seen* conditions are ever drawn here. (weight, {condition: probability})
PUBLIC_SOURCES: dict[str, tuple[float, dict[str, float]]] = {
    "demo_public_a": (0.30, {_NORMAL: 0.40, _MILD: 0.20, _MOD: 0.25, _SEV: 0.15}),
    "demo_public_b": (0.20, {_NORMAL: 0.20, _MILD: 0.15, _MOD: 0.20, _SEV: 0.15, _AMD: 0.18, _HTN: 0.12}),
    "demo_public_c": (0.20, {_NORMAL: 0.50, _GLAUCOMA: 0.50}),
    "demo_public_d": (0.30, {_NORMAL: 0.22, _GLAUCOMA: 0.14, _MILD: 0.08, _MOD: 0.12, _SEV: 0.08, _AMD: 0.18,
                             _HTN: 0.18}),
}
_GRADE = {_NORMAL: "no diabetic retinopathy", _MILD: _MILD, _MOD: _MOD, _SEV: _SEV}
_LESION = {"microaneurysms": "microaneurysms", "haemorrhages": "haemorrhages", "flame_haemorrhages": "haemorrhages",
           "hard_exudates": "hard exudates", "cotton_wool_spots": "cotton wool spots", "drusen": "drusen",
           "venous_beading": "venous beading", "arteriolar_narrowing": "arteriolar narrowing",
           "vessel_tortuosity": "vessel tortuosity"}
_LESION_VOCAB = sorted(set(_LESION.values()))
_MULTI = {_NORMAL: ["normal"], _GLAUCOMA: ["glaucoma"], _MILD: ["diabetic retinopathy"], _MOD: ["diabetic retinopathy"],
          _SEV: ["diabetic retinopathy"], _AMD: [_AMD], _HTN: [_HTN]}
_MULTI_VOCAB = ["normal", "glaucoma", "diabetic retinopathy", _AMD, _HTN]
# Free-text fragments in the style of clinical notes (never naming an unseen condition).
_FREE = {_NORMAL: ["routine screening, no abnormality", "normal fundus on review"],
         _GLAUCOMA: ["suspected glaucoma", "glaucoma follow-up", "raised pressure, large cup"],
         _MILD: ["diabetic, early changes"], _MOD: ["diabetic retinopathy, exudates"],
         _SEV: ["diabetic retinopathy, many bleeds"], _AMD: ["macular degeneration with drusen"],
         _HTN: ["hypertension, retinal changes"]}

# Evaluation sets: class names in index order and how each class is drawn. "diabetic retinopathy" in the
# seen set covers the moderate and severe grades.
EXPERIMENTS: dict[str, dict[str, list[str]]] = {
    "demo_seen": {"normal": [_NORMAL], "glaucoma": [_GLAUCOMA], "diabetic retinopathy": [_MOD, _SEV],
                  _AMD: [_AMD], _HTN: [_HTN]},
    "demo_unseen": {"normal": [_NORMAL], "pathologic myopia": ["pathologic myopia"], "cataract": ["cataract"],
                    "macular hole": ["macular hole"], "retinitis pigmentosa": ["retinitis pigmentosa"]},
    "demo_dr_grading": {"no diabetic retinopathy": [_NORMAL], _MILD: [_MILD], _MOD: [_MOD], _SEV: [_SEV]},
}


EXPERIMENT_DESCRIPTIONS: dict[str, str] = {
    "demo_seen": "seen conditions, held-out images (like FIVES): normal, glaucoma, DR, AMD, hypertensive retinopathy",
    "demo_unseen": "normal + conditions never used as public labels (like ODIR200x3 / 05_20x3)",
    "demo_dr_grading": "DR grades; no DR vs mild DR differ only by a few microaneurysms (local detail)",
}


def stream_id(name: str) -> int:
    """A stable integer for a named random stream (crc32 is the same on every platform and Python)."""
    return zlib.crc32(name.encode("utf-8"))


def allocate(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` into integer counts proportional to ``weights`` (largest remainder, deterministic)."""
    w = np.asarray(weights, dtype=np.float64)
    raw = total * w / w.sum()
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


@dataclass(frozen=True)
class Job:
    """One image to generate: ``kind`` is public / elite / eval / retrieval; ``info`` is kind-specific."""

    kind: str
    rel_path: str
    seed: tuple[int, ...]
    info: tuple[tuple[str, Any], ...]

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.info)


def _choice(rng: np.random.Generator, probs: dict[str, float]) -> str:
    names = list(probs)
    p = np.asarray([probs[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _public_row(source: str, rng: np.random.Generator, label_noise: float) -> tuple[Case, list[str], list[str]]:
    """Sample a public case and its (noisy, quirky) label lists for one source."""
    cond = _choice(rng, PUBLIC_SOURCES[source][1])
    conds = [cond]
    u = rng.random(4)  # fixed number of draws per row keeps the streams aligned whatever the branches
    quality = "poor" if source in ("demo_public_a", "demo_public_d") and u[0] < 0.03 else "good"
    if source == "demo_public_d" and u[1] < 0.12:  # comorbidity: glaucoma with a retinal condition
        other = _GLAUCOMA if cond not in (_GLAUCOMA, _NORMAL) else (_AMD if u[2] < 0.5 else _HTN)
        if cond != _NORMAL:
            conds.append(other)
    case = sample_case(tuple(conds), "CFP", rng, quality=quality)
    attributes = ["noisy"] if quality == "poor" else []
    noisy = u[3] < label_noise

    if source == "demo_public_a":
        vocab = list(_GRADE.values())
        label = _GRADE[cond]
        if noisy:
            label = vocab[int(rng.integers(len(vocab)))]
        cats = [label]
    elif source == "demo_public_b":
        cats = sorted({_LESION[k] for k in case.findings if k in _LESION})
        if noisy:  # annotator missed a lesion or marked a spurious one
            if cats and rng.random() < 0.5:
                cats.pop(int(rng.integers(len(cats))))
            else:
                cats = sorted(set(cats) | {_LESION_VOCAB[int(rng.integers(len(_LESION_VOCAB)))]})
        cats = cats or ["normal"]
    elif source == "demo_public_c":
        g = cond == _GLAUCOMA
        if noisy:
            g = not g
        cats = ["glaucoma" if g else "no glaucoma"]
        if g and rng.random() < 0.3:
            cats.append("increased cup disc ratio")
    else:
        cats = []
        for c in conds:
            for lab in _MULTI[c]:
                if lab == _AMD and rng.random() < 0.3:
                    lab = "age-related macular degeneration"  # real sets mix the hyphenated spelling
                if lab not in cats:
                    cats.append(lab)
            if c in (_MILD, _MOD, _SEV) and rng.random() < 0.5:
                cats.append(_GRADE[c])
        if noisy:
            cats[0] = _MULTI_VOCAB[int(rng.integers(len(_MULTI_VOCAB)))]
        r = rng.random()
        if r < 0.04:  # free-text label, as in DEN / STARE / ODIR
            age, sex = int(rng.integers(35, 85)), ("male" if rng.random() < 0.5 else "female")
            free = f"{age}-year-old {sex}, {_FREE[cond][int(rng.integers(len(_FREE[cond])))]},"
            cats = [free] if rng.random() < 0.5 else cats[:1] + [free]
        elif r < 0.055:
            cats = []  # unlabelled row
    return case, attributes, cats


def make_item(job: Job, root: Path, image_size: int, label_noise: float) -> dict[str, Any]:
    """Render one job's image to ``root / job.rel_path`` and return its CSV row."""
    rng = np.random.default_rng(list(job.seed))
    meta = job.meta
    if job.kind == "public":
        case, attributes, cats = _public_row(meta["source"], rng, label_noise)
        row = {"image": job.rel_path, "atributes": str(attributes), "categories": str(cats)}
    elif job.kind in ("elite", "retrieval"):
        case = sample_case(meta["condition"], meta["modality"], rng)
        row = {"image": job.rel_path, "caption": make_caption(case, rng)}
        # the Chinese caption of the same case, from its own stream: the English stream is not disturbed
        row["caption_zh"] = make_caption_zh(case, np.random.default_rng([*job.seed, ZH_STREAM]))
    elif job.kind == "eval":
        options = EXPERIMENTS[meta["experiment"]][meta["label"]]
        cond = options[int(rng.integers(len(options)))]
        case = sample_case(cond, "CFP", rng)
        row = {"image": job.rel_path, "atributes": "[]", "categories": str([meta["label"]])}
    elif job.kind == "segmentation":
        case = sample_case(meta["condition"], "CFP", rng)
        row = {"image": job.rel_path, "mask": mask_path(job.rel_path)}
    else:  # pragma: no cover - guarded by build
        raise ValueError(f"unknown job kind {job.kind!r}")
    if job.kind == "segmentation":
        # the same two calls as render_cfp, keeping the scene so its label map matches the image exactly
        scene = build_scene(case, image_size, rng)
        img = colour_cfp(case, scene, rng)
        _save_png(label_map(scene), root / row["mask"])
    else:
        img = render_case(case, image_size, rng)
    _save_png(img, root / job.rel_path)
    row["_conditions"] = "|".join(case.conditions)  # kept for the manifest statistics, not written to CSVs
    return row


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def mask_path(image_rel_path: str) -> str:
    """``demo_segmentation/images/x.png`` -> ``demo_segmentation/masks/x.png``."""
    return image_rel_path.replace("/images/", "/masks/", 1)


def segmentation_jobs(seed: int, n: int) -> list[Job]:
    """CFP images with label maps; conditions cycled so every class is present (own random stream, so the
    other images of the world do not depend on ``n``)."""
    sid = stream_id("segmentation")
    names = SEGMENTATION_CONDITIONS
    return [Job("segmentation", f"demo_segmentation/images/seg_{j:05d}.png", (seed, sid, j),
                (("condition", names[j % len(names)]),)) for j in range(n)]


def public_jobs(seed: int, n: int) -> list[Job]:
    jobs = []
    sources = list(PUBLIC_SOURCES)
    counts = allocate(n, [PUBLIC_SOURCES[s][0] for s in sources])
    sid = stream_id("public")
    for si, (source, k) in enumerate(zip(sources, counts)):
        for j in range(k):
            jobs.append(Job("public", f"{source}/cfp_{j:06d}.png", (seed, sid, si, j), (("source", source),)))
    return jobs


def paired_jobs(seed: int, kind: str, counts: dict[str, int], prefix: str) -> list[Job]:
    """Elite or retrieval pairs: per modality, conditions cycled in a seeded order (balanced classes)."""
    jobs = []
    sid = stream_id(kind)
    for mi, (modality, k) in enumerate(sorted(counts.items())):
        names = conditions_for_modality(modality)
        order_rng = np.random.default_rng([seed, sid, mi, 1 << 30])
        order = order_rng.permutation(len(names))
        for j in range(k):
            cond = names[int(order[j % len(names)])]
            rel = f"{prefix}/{modality}/{modality.lower()}_{j:06d}.png"
            jobs.append(Job(kind, rel, (seed, sid, mi, j), (("condition", cond), ("modality", modality))))
    return jobs


def eval_jobs(seed: int, n_per_class: int) -> list[Job]:
    jobs = []
    sid = stream_id("eval")
    for ei, (exp, classes) in enumerate(EXPERIMENTS.items()):
        for ci, label in enumerate(classes):
            for j in range(n_per_class):
                rel = f"demo_eval/{exp}/img_{ci * n_per_class + j:05d}.png"  # neutral name: no label in the path
                jobs.append(Job("eval", rel, (seed, sid, ei, ci, j), (("experiment", exp), ("label", label))))
    return jobs


def _check() -> None:
    # Public sources and evaluation sets must stay consistent with the ontology.
    for _w, probs in PUBLIC_SOURCES.values():
        assert all(c in SEEN_CONDITIONS for c in probs)
    for classes in EXPERIMENTS.values():
        assert all(c in CONDITIONS for opts in classes.values() for c in opts)
    assert all(c in CONDITIONS for c in SEGMENTATION_CONDITIONS)


_check()
