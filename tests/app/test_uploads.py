"""Upload checks: every refused file gets a reason naming the problem; the good files of an upload go through."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fundus_vlp.app.uploads import MAX_PIXELS, check_upload, check_uploads


def _png(path, size=(40, 30), value=120):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def test_a_good_image_is_decoded_to_a_unit_range_tensor(tmp_path):
    image, reason = check_upload(_png(tmp_path / "a.png"), max_bytes=10**6)
    assert reason is None
    assert tuple(image.shape) == (3, 30, 40) and abs(float(image.max()) - 120 / 255) < 1e-6


@pytest.mark.parametrize("case, expected", [
    ("empty", "empty file (0 bytes)"),
    ("text", "not an image file (accepted: PNG, JPEG, TIFF, BMP, WebP)"),
    ("gif", "GIF images are not accepted"),
    ("truncated", "corrupt or truncated"),
    ("oversize", "over the upload limit of 0.001 MB per image"),
])
def test_bad_uploads_are_refused_with_a_reason(tmp_path, case, expected):
    path = tmp_path / "upload.png"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("patient notes, not a picture")
    elif case == "gif":
        Image.new("RGB", (20, 20), (200, 30, 30)).save(path, format="GIF")
    elif case == "truncated":
        _png(tmp_path / "full.png", size=(64, 64))
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "full.png")
        path.write_bytes((tmp_path / "full.png").read_bytes()[:400])
    elif case == "oversize":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    image, reason = check_upload(path, max_bytes=1000 if case == "oversize" else 10**6)
    assert image is None and expected in reason


def test_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr("fundus_vlp.app.uploads.MAX_PIXELS", 100)
    image, reason = check_upload(_png(tmp_path / "big.png", size=(20, 20)), max_bytes=10**6)
    assert image is None and "over the limit" in reason and MAX_PIXELS > 30_000_000


def test_an_upload_keeps_good_files_and_names_the_rest(tmp_path):
    good = _png(tmp_path / "eye.png")
    (tmp_path / "x").mkdir()
    same_name = _png(tmp_path / "x" / "eye.png", value=30)
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    extra = _png(tmp_path / "fourth.png")
    out = check_uploads([good, bad, same_name, extra], max_mb=1, max_images=3)
    assert out.names == ["eye.png", "eye.png (2)"]
    assert len(out.images) == 2 and float(out.images[1].max()) == pytest.approx(30 / 255)
    assert [name for name, _ in out.rejected] == ["notes.png", "fourth.png"]
    assert "more than 3 images" in out.rejected[1][1]
    assert check_uploads(None).names == [] and check_uploads(None).rejected == []


def test_the_upload_store_deletes_uploads_and_nothing_else(tmp_path):
    from fundus_vlp.app.ui import label_text_problem
    from fundus_vlp.app.uploads import UploadStore

    store = UploadStore()
    (store.root / "abc123").mkdir()
    upload = _png(store.root / "abc123" / "eye.png")
    rejected = store.root / "def456" / "notes.png"
    rejected.parent.mkdir()
    rejected.write_text("not an image")
    mine = _png(tmp_path / "mine.png")  # a file outside the store is never deleted, even if named
    assert store.discard([str(upload), str(rejected), str(mine)]) == 2
    assert list(store.root.iterdir()) == [] and mine.is_file()
    store.close()
    assert not store.root.exists()

    assert label_text_problem("normal\nglaucoma") is None
    assert "at most 100 characters" in label_text_problem("normal\n" + "x" * 101)
    assert "characters: at most" in label_text_problem("a," * 3000)
