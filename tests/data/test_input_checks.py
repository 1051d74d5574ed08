"""Bad input found up front: pixel limits, every problem of a file, encodings, file kinds, symlinked datasets."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from fundus_vlp.data.check import check_dataset
from fundus_vlp.data.config import DataCfg
from fundus_vlp.data.dataframes import DataFormatError, read_any, read_captions, read_categorical, resolve_image_path
from fundus_vlp.data.images import BadImageError, load_image


def test_pixel_limit_is_configurable_and_a_big_fundus_photo_passes(tmp_path):
    from fundus_vlp.constants import DEFAULT_MAX_IMAGE_PIXELS
    from fundus_vlp.data.images import verify_image

    assert DataCfg().max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS
    assert DEFAULT_MAX_IMAGE_PIXELS >= 5184 * 3456
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(path)
    with pytest.raises(BadImageError, match=r"50x40 = 2,000 pixels is over the limit of 1,999 .*\(x.csv, row 2\)"):
        load_image(path, "x.csv, row 2", max_pixels=1999)
    with pytest.raises(BadImageError, match="over the limit"):
        verify_image(path, max_pixels=1999)
    assert load_image(path, max_pixels=2000).shape == (3, 40, 50)
    big = tmp_path / "canon.jpg"
    Image.new("RGB", (5184, 3456), (120, 40, 20)).save(big, quality=70)
    assert verify_image(big) == (5184, 3456, "RGB")  # default limit: a real camera's photo is not a bomb


def test_verify_image_decodes_jpeg_at_reduced_size_but_still_finds_truncation(tmp_path):
    from fundus_vlp.data.images import verify_image

    path = tmp_path / "x.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (512, 640, 3), np.uint8)).save(path, quality=90)
    assert verify_image(path) == (640, 512, "RGB")
    (tmp_path / "cut.jpg").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BadImageError, match="truncated"):
        verify_image(tmp_path / "cut.jpg", "d.csv, row 7")


def test_one_bad_row_does_not_hide_the_others(tmp_path):
    rows = ["ok.png,[],['a']"] * 45
    rows[2] = "x.png,[],\"['a'\""  # row 3: bad list literal
    rows[39] = ",[],['a']"  # row 40: empty image path
    f = tmp_path / "d.csv"
    f.write_text("image,atributes,categories\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_categorical(f)
    assert "2 problem(s)" in str(err.value)
    assert "d.csv, row 3: column 'atributes'" not in str(err.value)  # the bad column is named correctly
    assert "d.csv, row 3: column 'categories'" in str(err.value) and "d.csv, row 40: empty image path" in str(err.value)
    problems = []
    frame = read_categorical(f, problems=problems)
    assert len(frame) == 43 and [p.where.rsplit(" ", 1)[-1] for p in problems] == ["3", "40"]


def test_missing_images_are_found_after_a_parse_error_in_check_data(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"")
    rows = ["ok.png,[],['a']"] * 40
    rows[2] = "ok.png,[],\"['a'\""
    rows[39] = "gone.png,[],['a']"
    f = tmp_path / "d.csv"
    f.write_text("image,atributes,categories\n" + "\n".join(rows) + "\n")
    report = check_dataset(tmp_path, [f], decode=False, progress=False)
    reasons = {p.where.rsplit(" ", 1)[-1]: p.reason for p in report.problems}
    assert "list literal" in reasons["3"] and reasons["40"] == "file not found"
    assert reasons["1"] == "empty file (0 bytes)"  # --no-decode still checks size and existence


def test_duplicate_columns_and_header_only_files_are_errors(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("image,atributes,categories,categories\na.png,[],['x'],['y']\n")
    with pytest.raises(DataFormatError, match=r"dup.csv: duplicate column\(s\) \['categories'\]"):
        read_categorical(dup)
    empty = tmp_path / "empty.csv"
    empty.write_text("image,caption\n")
    with pytest.raises(DataFormatError, match=r"empty.csv: no data rows"):
        read_captions(empty)


@pytest.mark.parametrize("encoding,text", [("utf-8", "\ufeffimage,caption\na.png,r\u00e9tine\n"),
                                           ("latin-1", "image,caption\na.png,r\u00e9tine\n"),
                                           ("gb18030", "image,caption\na.png,\u89c6\u7f51\u819c\n")])
def test_encodings_are_accepted_when_named(tmp_path, encoding, text):
    f = tmp_path / "c.csv"
    f.write_bytes(text.encode(encoding))
    assert read_captions(f, encoding=encoding)["caption"][0] == text.split(",")[-1].strip()


@pytest.mark.parametrize("encoding,suggested", [("latin-1", "latin-1"), ("gb18030", "gb18030")])
def test_non_utf8_names_the_line_and_suggests_the_encoding(tmp_path, encoding, suggested):
    f = tmp_path / "c.csv"
    f.write_bytes("image,caption\na.png,fine\nb.png,\u89c6\u7f51\u819c\u75c5\u53d8\n".encode(encoding)
                  if encoding == "gb18030" else "image,caption\na.png,fine\nb.png,r\u00e9tine\n".encode(encoding))
    with pytest.raises(DataFormatError, match=rf"c.csv, line 3 \(data row 2\).*--encoding {suggested}"):
        read_captions(f)


def test_caption_file_problems_are_caption_problems_and_the_policy_is_a_config_key(tmp_path):
    f = tmp_path / "elite.csv"
    f.write_text("image,caption\na.png,a fundus\nb.png,\n")
    with pytest.raises(DataFormatError) as err:
        read_any(f)
    assert "elite.csv, row 2: b.png: empty caption" in str(err.value) and "missing column" not in str(err.value)
    assert DataCfg().on_empty_caption == "error"
    kind, frame = read_any(f, on_empty_caption=DataCfg(on_empty_caption="skip").on_empty_caption)
    assert kind == "captions" and list(frame["image"]) == ["a.png"] and frame.attrs["skipped_empty_captions"] == 1


def test_symlinked_dataset_folders_are_followed_and_escapes_decided_on_the_text(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "disk2" / "EYEPACS"
    root.mkdir()
    elsewhere.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(elsewhere / "a.png")
    (root / "01_EYEPACS").symlink_to(elsewhere, target_is_directory=True)
    path = resolve_image_path(root, "01_EYEPACS/a.png", "x.csv", 1)
    assert load_image(path).shape == (3, 4, 4)
    assert resolve_image_path(root, "01_EYEPACS/sub/../a.png") == path
    with pytest.raises(DataFormatError, match="escapes the data root"):
        resolve_image_path(root, "01_EYEPACS/../../disk2/EYEPACS/a.png", "x.csv", 2)


def test_default_workers_are_the_usable_cores():
    from fundus_vlp.data.check import default_workers

    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_workers() == expected
