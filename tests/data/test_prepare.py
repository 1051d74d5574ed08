"""`fundus-vlp prepare`: parallel, resumable pre-resizing with bad images reported by row."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import make_image_dataset
from fundus_vlp.cli.main import main
from fundus_vlp.data.images import BadImageError, load_image
from fundus_vlp.data.prepare import CacheIndex, prepare_dataset


@pytest.fixture
def dataset_with_bad_images(tmp_path):
    ds = make_image_dataset(tmp_path / "raw", n_per_class=3, n_elite=2)
    root = ds["root"]
    (root / "setA" / "normal_0.png").write_bytes(b"")  # empty file
    (root / "setA" / "glaucoma_1.png").write_bytes(b"garbage bytes, not a png")  # corrupt
    (root / "setA" / "glaucoma_2.png").unlink()  # missing
    Image.fromarray(np.zeros((30, 90, 3), np.uint8) + 120).save(root / "setA" / "wide.tif")
    with open(ds["public_csv"], "a") as f:
        f.write("99,setA/wide.tif,[],['normal']\n")
    return ds


def test_prepare_cli_reports_bad_rows_and_resumes(dataset_with_bad_images, tmp_path, capsys):
    ds = dataset_with_bad_images
    out = tmp_path / "cache"
    report = tmp_path / "report.json"
    args = ["prepare", "--root", str(ds["root"]), "--dataframe", str(ds["public_csv"]), str(ds["elite_csv"]),
            "--out", str(out), "--size", "32", "--workers", "2", "--json", str(report)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    bad = json.loads(report.read_text())["bad"]
    assert sorted(b["image"] for b in bad) == ["setA/glaucoma_1.png", "setA/glaucoma_2.png", "setA/normal_0.png"]
    rows = {b["image"]: b["where"] for b in bad}
    assert rows["setA/normal_0.png"].endswith("public.csv, row 1")
    assert "written: 9" in printed and "bad: 3" in printed
    wide = load_image(out / "setA" / "wide.png")
    assert wide.shape == (3, 32, 32) and float(wide[:, 20:, :].max()) == 0.0  # padded bottom
    # resumable: a second run re-uses everything that was written
    assert main(args) == 0
    assert "already cached: 9" in capsys.readouterr().out


def test_training_reads_the_cache_and_names_bad_rows(dataset_with_bad_images, tmp_path):
    ds = dataset_with_bad_images
    out = tmp_path / "cache"
    prepare_dataset(ds["root"], [ds["public_csv"]], out, size=32, workers=1, progress=False)
    shutil.rmtree(ds["root"] / "setA")  # training must not need the originals any more
    index = CacheIndex(out)
    assert index.active and index.size == 32
    assert load_image(index.resolve("setA/normal_1.png", "public.csv", 2)).shape == (3, 32, 32)
    with pytest.raises(BadImageError, match=r"unreadable when the cache was prepared.*public.csv, row 1"):
        index.resolve("setA/normal_0.png", "public.csv", 1)


def test_prepare_refuses_a_cache_of_another_size(dataset_with_bad_images, tmp_path):
    ds = dataset_with_bad_images
    out = tmp_path / "cache"
    prepare_dataset(ds["root"], [ds["elite_csv"]], out, size=32, workers=1, progress=False)
    with pytest.raises(ValueError, match="size=32"):
        prepare_dataset(ds["root"], [ds["elite_csv"]], out, size=64, workers=1, progress=False)


def test_worker_processes_write_the_same_cache(dataset_with_bad_images, tmp_path, monkeypatch):
    """Small jobs run in this process; large ones in spawned workers: both give the same files."""
    import fundus_vlp.data.prepare as prepare

    ds = dataset_with_bad_images
    here = prepare_dataset(ds["root"], [ds["public_csv"]], tmp_path / "here", size=32, workers=2, progress=False)
    monkeypatch.setattr(prepare, "_IMAGES_PER_WORKER_START", 1)
    pool = prepare_dataset(ds["root"], [ds["public_csv"]], tmp_path / "pool", size=32, workers=2, progress=False)
    assert (here.written, len(here.bad)) == (pool.written, len(pool.bad)) and here.written > 0
    files = sorted(p.relative_to(tmp_path / "here") for p in (tmp_path / "here").rglob("*.png"))
    assert files and all((tmp_path / "here" / f).read_bytes() == (tmp_path / "pool" / f).read_bytes() for f in files)
