"""Report-generation annotations: the FFA-IR JSON (built here) and KeepFIT's FFA.csv (read from the shared data)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA
from fundus_vlp.data.dataframes import DataFormatError
from fundus_vlp.data.report_annotations import read_report_annotations, split_rows


def write_ffair(root, cases=None) -> str:
    """A tiny FFA-IR annotation file: cases with 1-3 images each, a Chinese report on one case."""
    cases = cases or {
        "train": {"p1": (3, "Leakage at the macula."), "p2": (1, "Normal angiogram.")},
        "val": {"p3": (2, "Blocked fluorescence from haemorrhages.")},
        "test": {"p4": (1, "Window defect at the fovea.")},
    }
    data = {}
    for split, block in cases.items():
        data[split] = {}
        for cid, (n, text) in block.items():
            rels = []
            for k in range(n):
                rel = f"{cid}/{k}.jpg"
                (root / cid).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(root / rel)
                rels.append(rel)
            data[split][cid] = {"Image_path": rels, "En_Report": text, "Cn_Report": "中文报告", "Lesion_info": {}}
    path = root / "ffair_annotation.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    return str(path)


def test_ffair_json_cases_splits_and_images(tmp_path):
    path = write_ffair(tmp_path)
    cases = read_report_annotations(path, tmp_path)
    assert [(c.case_id, c.split, c.n_images) for c in cases] == [("p1", "train", 3), ("p2", "train", 1),
                                                                 ("p3", "val", 2), ("p4", "test", 1)]
    assert cases[0].images == [(tmp_path / f"p1/{k}.jpg").resolve() for k in range(3)]
    assert cases[2].report == "Blocked fluorescence from haemorrhages."
    assert read_report_annotations(path, tmp_path, report_key="Cn_Report")[0].report == "中文报告"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["train"]["p1"].pop("Image_path"), r"train/p1: 'Image_path' must be a non-empty list"),
    (lambda d: d["val"]["p3"].update(En_Report="  "), r"val/p3: missing or empty 'En_Report'"),
    (lambda d: d.update(dev={}), r"unknown split\(s\) \['dev'\]"),
    (lambda d: d["test"]["p4"].update(Image_path=["../outside.jpg"]), r"test/p4, image 0: .*escapes the data root"),
    (lambda d: d["test"]["p4"].update(Image_path=["p4/missing.jpg"]), r"p4/missing.jpg \(.*test/p4\)"),
])
def test_ffair_json_errors_name_file_and_case(tmp_path, mutate, message):
    path = write_ffair(tmp_path)
    data = json.loads(open(path, encoding="utf-8").read())
    mutate(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    with pytest.raises(DataFormatError, match=message) as info:
        read_report_annotations(path, tmp_path)
    assert "ffair_annotation.json" in str(info.value)


def test_split_rows_keeps_groups_together_and_is_seeded():
    groups = [f"g{i // 3}" for i in range(60)]
    a = split_rows(groups, 0, 0.2, 0.2)
    assert a == split_rows(groups, 0, 0.2, 0.2) and a != split_rows(groups, 1, 0.2, 0.2)
    for g in set(groups):
        assert len({s for s, h in zip(a, groups) if h == g}) == 1
    assert sorted(set(a)) == ["test", "train", "val"]
    with pytest.raises(ValueError, match="too few"):
        split_rows(["a", "b"], 0, 0.3, 0.3)


FFA_CSV = SHARED_DATA / "mm_retinal_v1" / "FFA.csv"


@pytest.mark.skipif(not FFA_CSV.is_file(), reason="shared MM-Retinal FFA.csv not present")
def test_keepfit_ffa_csv_form(tmp_path):
    # The images are not shipped: read the real file's structure without checking files.
    pattern = r"figure(\d+-\d+)"
    cases = read_report_annotations(FFA_CSV, tmp_path, group_pattern=pattern, check_files=False)
    import pandas as pd

    assert len(cases) == len(pd.read_csv(FFA_CSV))
    assert all(c.n_images == 1 and c.report for c in cases)
    assert all(c.images[0].is_relative_to(tmp_path.resolve()) for c in cases)
    split_of = {}
    for c in cases:  # images of one atlas figure never straddle two splits
        rel = c.images[0].relative_to(tmp_path.resolve()).as_posix()
        m = re.search(pattern, rel)
        key = m.group(1) if m else rel
        assert split_of.setdefault(key, c.split) == c.split
    counts = {s: sum(c.split == s for c in cases) for s in ("train", "val", "test")}
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0
