"""Tests for the embedded demo world (fundus_vlp.demo_world). A tiny 64 px world keeps them fast."""
from __future__ import annotations

import ast
import copy
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import TINY_WORLD
from fundus_vlp.demo_world import (CONDITIONS, SEEN_CONDITIONS, UNSEEN_CONDITIONS, DemoWorld, DemoWorldCfg,
                                        build_demo_world, make_caption, render_case, sample_case)
from fundus_vlp.demo_world import build as build_mod
from fundus_vlp.demo_world import records as records_mod
from fundus_vlp.demo_world.fundus import build_scene
from fundus_vlp.demo_world.segmentation import SEGMENTATION_CLASSES, label_map
from fundus_vlp.data.knowledge import KnowledgeBase, normalize_label


def tiny_cfg(**kw) -> DemoWorldCfg:
    base = {**copy.deepcopy(TINY_WORLD), "corpus_paragraphs": 70}
    base.update(kw)
    return DemoWorldCfg(**base)


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_cat(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    assert list(df.columns) == ["Unnamed: 0", "image", "atributes", "categories"]
    df["atributes"] = df["atributes"].map(ast.literal_eval)
    df["categories"] = df["categories"].map(ast.literal_eval)
    return df


def read_cap(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    assert list(df.columns) == ["Unnamed: 0", "image", "caption"]
    return df


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> DemoWorld:
    return build_demo_world(tiny_cfg(), cache_dir=tmp_path_factory.mktemp("dw"), num_workers=1)


def test_layout_and_formats(world):
    cfg = world.cfg
    assert world.root.is_dir() and world.manifest_path.is_file()
    pub = read_cat(world.public_csv)
    assert len(pub) == cfg.n_public
    assert all(isinstance(c, list) and all(isinstance(s, str) for s in c) for c in pub["categories"])
    assert all(isinstance(a, list) for a in pub["atributes"])
    keys = {p.split("/")[0] for p in pub["image"]}
    assert keys == {"demo_public_a", "demo_public_b", "demo_public_c", "demo_public_d"}  # dataset-balancing keys
    assert set(world.elite_csvs) == {"CFP", "FFA", "OCT"}
    for m, path in world.elite_csvs.items():
        df = read_cap(path)
        assert len(df) == cfg.elite_per_modality[m]
        for cap in df["caption"]:
            assert 15 <= len(cap.split()) <= 60, cap
    assert len(read_cap(world.retrieval_csv)) == cfg.n_retrieval
    assert {"demo_seen", "demo_unseen", "demo_dr_grading"} <= set(world.eval_csvs)
    for name, path in world.eval_csvs.items():
        df = read_cat(path)
        exp = world.experiments[name]
        assert exp["targets"] == {c: i for i, c in enumerate(exp["classes"])}
        labels = [c[0] for c in df["categories"]]
        assert all(lab in exp["targets"] for lab in labels)
        assert sorted(pd.Series(labels).value_counts().tolist()) == [cfg.n_eval_per_class] * len(exp["classes"])
    assert world.seen_conditions == SEEN_CONDITIONS and world.unseen_conditions == UNSEEN_CONDITIONS
    # Every listed image exists, decodes as 8-bit RGB of the configured size.
    all_images = [p for path in [world.public_csv, *world.eval_csvs.values()] for p in read_cat(path)["image"]]
    all_images += [p for path in [world.retrieval_csv, *world.elite_csvs.values()] for p in read_cap(path)["image"]]
    for rel in all_images:
        with Image.open(world.root / rel) as im:
            assert im.mode == "RGB" and im.size == (cfg.image_size, cfg.image_size) and im.format == "PNG"
    # Ground truth: every image listed once; public images only show seen conditions; eval labels match.
    truth = pd.read_csv(world.truth_csv).set_index("image")
    seg_images = list(pd.read_csv(world.segmentation_csv)["image"])
    assert sorted(truth.index) == sorted(all_images + seg_images)
    pub_truth = truth[truth["split"] == "public"]["conditions"].str.split("|")
    assert all(set(c) <= set(SEEN_CONDITIONS) for c in pub_truth)
    unseen = read_cat(world.eval_csvs["demo_unseen"])
    for rel, cats in zip(unseen["image"], unseen["categories"]):
        assert truth.loc[rel, "conditions"] == cats[0]
    assert set(truth[truth["split"] == "elite"]["modality"]) == {"CFP", "FFA", "OCT"}
    paragraphs = [p for f in world.corpus_files for p in f.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    assert len(paragraphs) == cfg.corpus_paragraphs


def test_same_seed_is_byte_identical_other_seed_differs(world, tmp_path):
    again = build_demo_world(tiny_cfg(), cache_dir=tmp_path / "a", num_workers=2)  # worker count must not matter
    assert again.root != world.root
    ref = tree_hashes(world.root)
    assert tree_hashes(again.root) == ref
    other = build_demo_world(tiny_cfg(seed=1), cache_dir=tmp_path / "b", num_workers=1)
    oth = tree_hashes(other.root)
    # (the FFA report cases draw their number of eyes and frames, so only the other file names are seed-free)
    pngs = [k for k in ref if k.endswith(".png") and not k.startswith("demo_ffa_reports/")]
    assert set(pngs) == {k for k in oth if k.endswith(".png") and not k.startswith("demo_ffa_reports/")}
    pngs += [k for k in ref if k.startswith("demo_ffa_reports/") and k in oth]
    assert sum(ref[k] != oth[k] for k in pngs) == len(pngs)  # every image changes with the seed


def _terms(kb: KnowledgeBase, name: str) -> list[str]:
    return [normalize_label(t) for t in kb.terms(name)]


def test_unseen_never_public_but_in_captions_corpus_and_eval(world, kb):
    cats = [normalize_label(c) for row in read_cat(world.public_csv)["categories"] for c in row]
    captions = " ".join(read_cap(p)["caption"].str.lower().str.cat(sep=" ") for p in world.elite_csvs.values())
    corpus = " ".join(f.read_text(encoding="utf-8").lower() for f in world.corpus_files)
    unseen_eval = {c[0] for c in read_cat(world.eval_csvs["demo_unseen"])["categories"]}
    for name in UNSEEN_CONDITIONS:
        terms = _terms(kb, name)
        assert len(terms) > 1
        leaks = [c for c in cats if any(t in c for t in terms)]
        assert not leaks, (name, leaks)
        assert any(t in captions for t in terms), name
        assert name in corpus, name
        assert name in unseen_eval
    # Seen conditions, by contrast, do appear as public labels (in some spelling).
    assert any("glaucoma" in c for c in cats) and any("diabetic retinopathy" in c for c in cats)


def test_public_labeller_quirks_and_no_unseen_images():
    seen_quirks = {"free_text": 0, "empty": 0, "noisy": 0, "hyphen": 0, "multi": 0}
    for source in records_mod.PUBLIC_SOURCES:
        for i in range(400):
            case, attrs, cats = records_mod._public_row(source, np.random.default_rng([7, i, len(source)]), 0.05)
            assert set(case.conditions) <= set(SEEN_CONDITIONS)
            seen_quirks["free_text"] += any("year-old" in c for c in cats)
            seen_quirks["empty"] += cats == []
            seen_quirks["noisy"] += attrs == ["noisy"]
            seen_quirks["hyphen"] += "age-related macular degeneration" in cats
            seen_quirks["multi"] += len(cats) > 1
    assert all(v > 0 for v in seen_quirks.values()), seen_quirks


def test_eval_images_disjoint_from_training(world):
    def hashes(paths):
        return {hashlib.sha256((world.root / p).read_bytes()).hexdigest() for p in paths}

    train = list(read_cat(world.public_csv)["image"])
    train += [p for path in world.elite_csvs.values() for p in read_cap(path)["image"]]
    held = [p for path in world.eval_csvs.values() for p in read_cat(path)["image"]]
    held += list(read_cap(world.retrieval_csv)["image"])
    assert not set(train) & set(held)
    assert not hashes(train) & hashes(held)
    assert len(hashes(held)) == len(held)


def test_segmentation_masks_match_their_images(world):
    pairs = pd.read_csv(world.segmentation_csv)
    assert list(pairs.columns[-2:]) == ["image", "mask"] and len(pairs) == world.cfg.n_segmentation
    assert world.experiments["demo_segmentation"]["classes"] == list(SEGMENTATION_CLASSES)
    counts = np.zeros(len(SEGMENTATION_CLASSES), int)
    colour = {k: [] for k in range(len(SEGMENTATION_CLASSES))}
    for img_rel, mask_rel in zip(pairs["image"], pairs["mask"]):
        with Image.open(world.root / mask_rel) as m:
            assert m.mode == "L" and m.size == (world.cfg.image_size,) * 2
            mask = np.asarray(m)
        img = np.asarray(Image.open(world.root / img_rel)).astype(float)
        assert mask.max() < len(SEGMENTATION_CLASSES)
        counts += np.bincount(mask.ravel(), minlength=len(SEGMENTATION_CLASSES))
        inside = img.sum(-1) > 30  # the black outside of the field of view is background too
        for k in colour:
            if ((mask == k) & inside).any():
                colour[k].append(img[(mask == k) & inside].mean(0))
    assert (counts > 0).all(), counts  # every class appears in the set
    mean = {k: np.mean(v, axis=0) for k, v in colour.items()}
    # the masks sit on what the image shows: vessels darker than the fundus background, disc rim and cup
    # brighter than it
    assert mean[1].sum() < mean[0].sum() < min(mean[2].sum(), mean[3].sum())


def test_label_map_priorities():
    rng = np.random.default_rng(3)
    case = sample_case("severe diabetic retinopathy", "CFP", rng)
    sc = build_scene(case, 64, rng)
    lab = label_map(sc)
    assert (lab[sc.cup_alpha >= 0.5] == 3).all()  # vessels entering the cup stay cup
    lesion = np.zeros_like(lab, bool)
    for k in ("haemorrhages", "microaneurysms", "hard_exudates"):
        if k in sc.masks:
            lesion |= sc.masks[k] >= 0.5
    assert lesion.any() and (lab[lesion & (sc.fov >= 0.5)] == 4).all()  # lesions are painted over vessels
    assert (lab[sc.fov < 0.5] == 0).all()


# Pixel hashes of images of the tiny seed-0 world written by the generator before the segmentation set was
# added: adding masks must leave every existing image as it was (existing demo results do not move).
_PIXELS_BEFORE_SEGMENTATION = {
    "demo_public_a/cfp_000000.png": "8fbe1d4f5bb68809",
    "demo_eval/demo_seen/img_00000.png": "d488dcf0e0b32b68",
    "demo_elite/FFA/ffa_000000.png": "bee00a1292a992dd",
    "demo_retrieval/OCT/oct_000000.png": "c887486dea955fdd",
}


def test_existing_images_unchanged_by_the_segmentation_set(world):
    for rel, digest in _PIXELS_BEFORE_SEGMENTATION.items():
        pixels = np.asarray(Image.open(world.root / rel)).tobytes()
        assert hashlib.sha256(pixels).hexdigest()[:16] == digest, rel


def test_cache_reuse_does_not_rebuild(tmp_path, monkeypatch):
    cfg = tiny_cfg(n_public=20, n_eval_per_class=2, n_retrieval=4, corpus_paragraphs=20)
    w1 = build_demo_world(cfg, cache_dir=tmp_path, num_workers=1)
    mtimes = {p: p.stat().st_mtime_ns for p in w1.root.rglob("*")}

    def boom(*a, **k):
        raise AssertionError("rebuilt a cached world")

    monkeypatch.setattr(build_mod, "_generate", boom)
    w2 = build_demo_world(cfg, cache_dir=tmp_path)
    assert w2.root == w1.root and w2.public_csv == w1.public_csv and w2.cfg == cfg
    assert {p: p.stat().st_mtime_ns for p in w2.root.rglob("*")} == mtimes
    assert sorted(os.listdir(tmp_path)) == [w1.root.name]


def test_default_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS_VLP_CACHE", str(tmp_path))
    assert build_mod.default_cache_dir() == tmp_path / "demo_world"
    assert tiny_cfg().cache_key() != tiny_cfg(seed=1).cache_key()
    assert tiny_cfg().cache_key() == tiny_cfg().cache_key()


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    cfg = tiny_cfg(n_public=20, n_eval_per_class=2, n_retrieval=4, corpus_paragraphs=20)

    def fail(*a, **k):  # images and CSVs are already written when the corpus step runs
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(build_mod, "make_corpus", fail)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_demo_world(cfg, cache_dir=tmp_path, num_workers=1)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    # A half-written world (no manifest) is not trusted: it is rebuilt.
    root = tmp_path / cfg.cache_key()
    (root / "demo_public_a").mkdir(parents=True)
    w = build_demo_world(cfg, cache_dir=tmp_path, num_workers=1)
    assert w.root == root and w.manifest_path.is_file() and w.public_csv.is_file()
    assert sorted(os.listdir(tmp_path)) == [root.name]


def test_captions_name_condition_and_findings():
    rng = np.random.default_rng(3)
    for name, cond in CONDITIONS.items():
        for modality in cond.modalities:
            for _ in range(8):
                case = sample_case(name, modality, rng)
                cap = make_caption(case, rng).lower()
                assert 15 <= len(cap.split()) <= 60, cap
                names = [name, *cond.synonyms] if name != "normal" else ["normal"]
                assert any(n in cap for n in names), cap


def test_images_carry_the_seen_conditions():
    """A linear model on colour statistics separates the seen conditions far above chance (1/7)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(img: np.ndarray) -> np.ndarray:
        x = img.astype(np.float32) / 255.0
        px = x[x.sum(-1) > 0.15]  # inside the field of view
        chrom = px / (px.sum(1, keepdims=True) + 1e-3)
        f = [np.histogram(px[:, c], bins=16, range=(0, 1))[0] for c in range(3)]
        f += [np.histogram(chrom[:, c], bins=16, range=(0, 1))[0] for c in range(3)]
        return np.concatenate(f) / len(px)

    X, y = [], []
    for ci, name in enumerate(SEEN_CONDITIONS):
        for j in range(40):
            rng = np.random.default_rng([11, ci, j])
            X.append(features(render_case(sample_case(name, "CFP", rng), 64, rng)))
            y.append(ci)
    Xtr, Xte, ytr, yte = train_test_split(np.array(X), np.array(y), test_size=0.3, random_state=0, stratify=y)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5)).fit(Xtr, ytr)
    acc = float((clf.predict(Xte) == yte).mean())
    assert acc >= 0.55, acc


def test_public_and_eval_labels_are_in_knowledge_base(world, kb):
    # Prompt augmentation and zero-shot ensembles look labels up in the KB: every non-free-text label must hit.
    labels = {c for row in read_cat(world.public_csv)["categories"] for c in row if "year-old" not in c}
    for exp in world.experiments.values():
        if exp.get("task") != "segmentation":  # mask classes (vessel, cup, ...) are not zero-shot prompts
            labels |= set(exp["classes"])
    missing = sorted(lab for lab in labels if not kb.descriptions(lab))
    assert not missing, missing


def test_ffa_report_cases_in_ffair_layout(world):
    import json

    from fundus_vlp.demo_world.ffa_reports import MAX_FRAMES_PER_EYE
    from fundus_vlp.data.report_annotations import read_report_annotations

    data = json.loads(world.ffa_reports.read_text(encoding="utf-8"))
    assert list(data) == ["train", "val", "test"] and all(data.values())
    assert sum(len(b) for b in data.values()) == world.cfg.ffa_cases
    for block in data.values():
        for cid, entry in block.items():
            paths = entry["Image_path"]
            assert 1 <= len(paths) <= MAX_FRAMES_PER_EYE * len(entry["Eyes"])
            assert all(p.startswith(f"demo_ffa_reports/{cid}/") and (world.root / p).is_file() for p in paths)
            assert {Path(p).name.split("_")[0] for p in paths} == set(entry["Eyes"])  # every imaged eye has frames
            report = entry["En_Report"]
            for eye, cond in zip(entry["Eyes"], entry["Conditions"]):  # the impression names each eye's condition
                assert (cond if cond != "normal" else "normal") in report and eye in report.lower()
    cases = read_report_annotations(world.ffa_reports, world.root)  # the reader of `eval report` accepts it
    assert len(cases) == world.cfg.ffa_cases


def test_ffa_cases_leave_every_other_file_unchanged(world, tmp_path):
    without = build_demo_world(tiny_cfg(ffa_cases=0), cache_dir=tmp_path, num_workers=1)
    assert without.ffa_reports is None
    ref, new = tree_hashes(without.root), tree_hashes(world.root)
    del ref["manifest.json"]
    assert {k: new[k] for k in ref} == ref
    assert all(k.startswith("demo_ffa_reports/") or k in ("dataframes/ffa_reports.json", "manifest.json")
               for k in set(new) - set(ref))


def test_ffa_cases_carry_a_chinese_report_in_a_bilingual_world_only(tmp_path):
    import json

    from fundus_vlp.demo_world.ffa_reports import ffa_case_jobs, make_ffa_case, write_annotations
    from fundus_vlp.demo_world.text_zh import CONDITION_NAMES_ZH

    jobs = ffa_case_jobs(0, 7)
    entries = [make_ffa_case(job, tmp_path, 32) for job in jobs]
    for entry in entries:
        zh = entry["Cn_Report"]
        assert zh.endswith("。") and len(zh) <= 80
        for eye, cond in zip(entry["Eyes"], entry["Conditions"]):  # the diagnosis names each eye's condition
            assert all(CONDITION_NAMES_ZH[c][0] in zh for c in cond.split("|"))
            assert {"right": "右眼", "left": "左眼"}[eye] in zh or "双眼" in zh
    again = make_ffa_case(jobs[0], tmp_path / "again", 32)
    assert again == entries[0]  # seeded
    for chinese in (False, True):
        write_annotations(jobs, entries, tmp_path / f"{chinese}.json", chinese)
        cases = [c for block in json.loads((tmp_path / f"{chinese}.json").read_text(encoding="utf-8")).values()
                 for c in block.values()]
        assert all(("Cn_Report" in c) == chinese for c in cases) and all(c["En_Report"] for c in cases)
