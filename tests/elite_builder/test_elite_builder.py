"""build-elite on atlas PDFs generated here (PyMuPDF) from the tiny demo world: pairs, panels, languages,
modality, rejections, bad PDFs, resuming, the review page."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import fitz
import pandas as pd
import pytest
from PIL import Image

from fundus_vlp.demo_world import DemoWorldCfg, build_demo_world
from fundus_vlp.elite_builder import ELITE_COLUMNS, EliteBuildCfg, build_elite
from fundus_vlp.elite_builder import build as build_module
from fundus_vlp.elite_builder.captions import parse_caption_block, split_panels
from fundus_vlp.elite_builder.dedup import dhash, hamming
from fundus_vlp.elite_builder.modality import non_fundus_reason, stats_probabilities
from fundus_vlp.elite_builder.imagestats import image_stats
from fundus_vlp.elite_builder.panels import panel_boxes
from fundus_vlp.elite_builder.sample_atlas import (composite, demo_figures, drawing_image, image_matches,
                                                        table_image, write_sample_atlas)
from fundus_vlp.data.dataframes import read_captions

from conftest import TINY_WORLD

# The generated atlas is unambiguous: a correct builder extracts every pair and nothing else.
MIN_PRECISION = 1.0
MIN_RECALL = 1.0


@pytest.fixture(scope="module")
def world():
    return build_demo_world(DemoWorldCfg(**copy.deepcopy(TINY_WORLD)))


@pytest.fixture(scope="module")
def atlas(world, tmp_path_factory):
    return write_sample_atlas(world, tmp_path_factory.mktemp("atlas") / "atlas.pdf")


@pytest.fixture(scope="module")
def built(atlas, tmp_path_factory):
    out = tmp_path_factory.mktemp("elite")
    report = build_elite([atlas.path], out)
    return out, report


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def score(out: Path, atlas):
    """(precision, recall, wrong rows): a pair is right when its picture is the demo image of that
    figure panel and its captions are exactly the expected ones."""
    got = _read(out / "elite.csv")
    expected = {(p.figure, p.panel): p for p in atlas.pairs}
    wrong, right = [], 0
    for row in got.itertuples():
        e = expected.get((row.figure, row.panel))
        ok = (e is not None and row.caption == e.caption and row.caption_zh == e.caption_zh
              and image_matches(Image.open(out / row.image), Image.open(e.image)))
        right += ok
        if not ok:
            wrong.append((row.figure, row.panel, row.caption[:60]))
    return right / max(len(got), 1), right / len(expected), wrong


def test_pairs_of_the_generated_atlas_have_full_precision_and_recall(built, atlas):
    out, report = built
    precision, recall, wrong = score(out, atlas)
    assert precision >= MIN_PRECISION and recall >= MIN_RECALL, wrong
    assert report.pairs == len(atlas.pairs) == 13 and not report.failed


def test_modality_from_statistics_is_right_on_every_demo_image(built, atlas):
    got = _read(built[0] / "elite.csv").set_index(["figure", "panel"])
    for p in atlas.pairs:
        assert got.loc[(p.figure, p.panel), "modality"] == p.modality, (p.figure, p.panel)
    assert (got["confidence"].astype(float) > 0.5).all()


def test_multi_panel_figures_keep_the_lead_in_with_each_panel(built):
    got = _read(built[0] / "elite.csv")
    four = got[got["figure"] == "1-12"]
    assert list(four["panel"]) == ["A", "B", "C", "D"]  # 2x2 composite split in reading order
    assert all(c.startswith("Case 1-12. ") for c in four["caption"])
    both = got[got["figure"] == "1-3"]  # composite + bilingual caption in one block
    assert all(c.startswith("Case 1-3, the same eye") for c in both["caption"])
    assert all(z.startswith("病例1-3，同一眼的两次检查。") and " " not in z for z in both["caption_zh"])


def test_non_fundus_figures_are_rejected_with_their_reason(built, atlas):
    rejected = _read(built[0] / "rejected.csv").set_index("figure")
    words = {"table": "table", "drawing": "drawing", "vector": "vector drawing", "duplicate": "duplicate of images/"}
    for figure, kind in atlas.rejects.items():
        assert words[kind] in rejected.loc[figure, "reason"], (figure, rejected.loc[figure, "reason"])
    assert set(rejected.index) == set(atlas.rejects)
    assert (built[0] / rejected.loc["1-8", "image"]).is_file()  # the rejected picture is kept to look at


def test_the_elite_file_reads_as_a_caption_file(built):
    out = built[0]
    frame = read_captions(out / "elite.csv")
    assert len(frame) == 13 and (frame["caption"] != "").all()
    raw = (out / "elite.csv").read_bytes()
    assert raw.startswith("\ufeff".encode()) and "视网膜".encode() in raw  # UTF-8 with BOM, no mojibake
    assert list(_read(out / "elite.csv").columns) == list(ELITE_COLUMNS)
    per_modality = sum(len(_read(out / f"elite_{m}.csv")) for m in ("CFP", "FFA", "OCT"))
    assert per_modality == 13


# ------------------------------------------------------------------------------------------ captions


@pytest.mark.parametrize("block,number", [("Fig. 3-12 Drusen.", "3-12"), ("Figure 3.12: Drusen.", "3-12"),
                                          ("FIGURE 3-12 Drusen.", "3-12"), ("图3-12 玻璃膜疣", "3-12"),
                                          ("图 3-12 玻璃膜疣", "3-12"), ("Fig 12 Drusen.", "12")])
def test_figure_labels(block, number):
    (cap,) = parse_caption_block(block)
    assert cap.figure == number and not cap.text.startswith(("Fig", "图", ":", "."))


def test_text_that_only_cites_a_figure_is_not_a_caption():
    assert parse_caption_block("As shown in Fig. 3-12, drusen are yellow.") == []


def test_bilingual_block_splits_only_at_its_own_number():
    caps = parse_caption_block("图3-12 黄斑裂孔 Fig. 3-12 Macular hole, compare Fig. 3-11.")
    assert [(c.language, c.text) for c in caps] == [("zh", "黄斑裂孔"), ("en", "Macular hole, compare Fig. 3-11.")]


@pytest.mark.parametrize("caption,lead,panels", [
    ("Drusen. A. Left eye. B. Right eye.", "Drusen.", ["Left eye.", "Right eye."]),
    ("Drusen (a) left eye; (b) right eye", "Drusen", ["left eye", "right eye"]),
    ("玻璃膜疣。A．左眼；B．右眼", "玻璃膜疣。", ["左眼", "右眼"]),
    ("玻璃膜疣 A：左眼 B：右眼", "玻璃膜疣", ["左眼", "右眼"]),
])
def test_panel_markers(caption, lead, panels):
    split = split_panels(caption)
    assert split.lead_in == lead and list(split.panels.values()) == panels


def test_lone_capital_letters_are_not_panels():
    assert split_panels("Deficiency of vitamin A. Night blindness, e.g. in retinitis pigmentosa.") is None
    assert split_panels("Drusen. A. Left eye. C. Right eye.") is None  # B missing: not a run


def test_panel_caption_keeps_the_lead_in():
    split = split_panels("Diabetic retinopathy A. colour photograph B. angiogram")
    assert split.caption_for("B") == "Diabetic retinopathy. angiogram"
    zh = split_panels("糖尿病视网膜病变 A．彩照 B．造影")
    assert zh.caption_for("A", chinese=True) == "糖尿病视网膜病变。彩照"


# ------------------------------------------------------------------------------------------ images


def test_composite_splits_at_white_gutters_in_reading_order(world):
    figs = demo_figures(world)[:4]
    tiles = [Image.open(f.image).convert("RGB") for f in figs]
    sheet = composite(tiles, columns=2)
    boxes = panel_boxes(sheet, EliteBuildCfg())
    assert len(boxes) == 4
    for box, tile in zip(boxes, tiles):
        assert image_matches(sheet.crop(box), tile)
    assert len(panel_boxes(tiles[0], EliteBuildCfg())) == 1  # a single picture is not cut


def test_a_panel_letter_in_the_gutter_is_not_a_panel(world):
    tiles = [Image.open(f.image).convert("RGB") for f in demo_figures(world)[:2]]
    sheet = composite(tiles, columns=2, gutter=14)
    from PIL import ImageDraw

    ImageDraw.Draw(sheet).rectangle([70, 2, 72, 4], fill="black")  # a speck of a letter in the gutter
    assert len(panel_boxes(sheet, EliteBuildCfg())) == 2


def test_tables_and_drawings_are_not_fundus_images(world):
    cfg = EliteBuildCfg()
    assert non_fundus_reason(image_stats(table_image()), (320, 160), cfg).startswith("table")
    assert non_fundus_reason(image_stats(drawing_image()), (240, 240), cfg).startswith("drawing")
    for f in demo_figures(world):
        with Image.open(f.image) as im:
            assert non_fundus_reason(image_stats(im), im.size, cfg) is None
            probs = stats_probabilities(image_stats(im))
            assert max(probs, key=probs.get) == f.modality and abs(sum(probs.values()) - 1) < 1e-6


def test_dhash_finds_the_same_picture_rescaled_but_not_another(world):
    a, b = (Image.open(f.image).convert("RGB") for f in demo_figures(world)[:2])
    assert hamming(dhash(a), dhash(a.resize((150, 150)))) <= EliteBuildCfg().dedup_max_distance
    hashes = [dhash(Image.open(f.image)) for f in demo_figures(world)]
    distances = [hamming(x, y) for i, x in enumerate(hashes) for y in hashes[i + 1:]]
    assert min(distances) > EliteBuildCfg().dedup_max_distance


def test_a_caption_in_the_other_language_printed_elsewhere_joins_by_figure_number(world, tmp_path):
    fig = demo_figures(world)[0]
    doc = fitz.open()
    page = doc.new_page()
    page.insert_image(fitz.Rect(72, 72, 272, 272), filename=str(fig.image))
    page.insert_textbox(fitz.Rect(72, 280, 520, 400), f"Fig. 5-1 {fig.caption}", fontname="helv", fontsize=9)
    doc.new_page().insert_textbox(fitz.Rect(72, 72, 520, 120), f"图5-1 {fig.caption_zh}", fontname="china-s",
                                  fontsize=9)  # e.g. the Chinese captions of a chapter listed on the next page
    doc.save(tmp_path / "split.pdf")
    report = build_elite([tmp_path / "split.pdf"], tmp_path / "out")
    (row,) = _read(tmp_path / "out" / "elite.csv").itertuples()
    assert (row.figure, row.caption, row.caption_zh) == ("5-1", fig.caption, fig.caption_zh)
    assert report.rejected == 0  # the Chinese caption is used, not reported as a caption without image


def test_a_full_page_plate_gets_the_caption_on_the_facing_page(world, tmp_path):
    figs = demo_figures(world)
    doc = fitz.open()
    doc.new_page().insert_image(fitz.Rect(72, 72, 520, 520), filename=str(figs[0].image))  # plate, no text
    doc.new_page().insert_textbox(fitz.Rect(72, 72, 520, 200), f"Fig. 6-1 {figs[0].caption}", fontname="helv",
                                  fontsize=9)
    doc.save(tmp_path / "plate.pdf")
    build_elite([tmp_path / "plate.pdf"], tmp_path / "out")
    (row,) = _read(tmp_path / "out" / "elite.csv").itertuples()
    assert (row.page, row.figure, row.caption) == ("1", "6-1", figs[0].caption)


def test_a_scanned_page_is_reported_as_scanned_not_matched_to_a_neighbouring_caption(world, tmp_path):
    """An atlas with a text layer, one of whose pages is a scan (one page-sized image, no text): the scan is
    reported with its page number, and the caption-only page beside it does not take it as its plate."""
    figs = demo_figures(world)
    printed = fitz.open()  # the page that was scanned: a figure and its caption, as pixels once scanned
    page = printed.new_page()
    page.insert_image(fitz.Rect(72, 72, 272, 272), filename=str(figs[1].image))
    page.insert_textbox(fitz.Rect(72, 280, 520, 400), f"Fig. 8-2 {figs[1].caption}", fontname="helv", fontsize=9)
    scan = page.get_pixmap(dpi=100).tobytes("png")
    doc = fitz.open()
    first = doc.new_page()
    first.insert_image(fitz.Rect(72, 72, 272, 272), filename=str(figs[0].image))
    first.insert_textbox(fitz.Rect(72, 280, 520, 400), f"Fig. 8-1 {figs[0].caption}", fontname="helv", fontsize=9)
    doc.new_page().insert_image(doc[0].rect, stream=scan)  # page 2: the scan, edge to edge
    doc.new_page().insert_textbox(fitz.Rect(72, 72, 520, 200), "Fig. 8-3 Scheme of the retinal layers.",
                                  fontname="helv", fontsize=9)  # page 3: a caption whose drawing is missing
    doc.save(tmp_path / "scanned_page.pdf")
    report = build_elite([tmp_path / "scanned_page.pdf"], tmp_path / "out")
    assert report.results[0].status == "built"
    (row,) = _read(tmp_path / "out" / "elite.csv").itertuples()
    assert (row.page, row.figure) == ("1", "8-1")
    rejected = _read(tmp_path / "out" / "rejected.csv")
    scanned = rejected[rejected["page"] == "2"]
    assert list(scanned["reason"]) == ["scanned: no text layer on page 2 (a page-sized image); its captions are "
                                       "pixels: run OCR on the PDF first (e.g. `ocrmypdf in.pdf out.pdf`)"]
    assert (tmp_path / "out" / scanned["image"].iloc[0]).is_file()  # the scan is kept for a person to look at
    (fig3,) = rejected[rejected["figure"] == "8-3"].itertuples()
    assert fig3.page == "3" and fig3.reason == "caption without an image near it"


def test_a_picture_stored_as_strips_is_one_picture(world, tmp_path):
    fig = demo_figures(world)[0]
    picture = Image.open(fig.image).convert("RGB")
    doc = fitz.open()
    page = doc.new_page()
    h = picture.height // 4
    for k in range(4):  # four horizontal strips drawn edge to edge, as some PDF producers store images
        strip = picture.crop((0, k * h, picture.width, (k + 1) * h))
        buf = __import__("io").BytesIO()
        strip.save(buf, format="PNG")
        page.insert_image(fitz.Rect(72, 72 + k * 50, 272, 72 + (k + 1) * 50), stream=buf.getvalue())
    page.insert_textbox(fitz.Rect(72, 280, 520, 400), f"Fig. 7-1 {fig.caption}", fontname="helv", fontsize=9)
    doc.save(tmp_path / "strips.pdf")
    build_elite([tmp_path / "strips.pdf"], tmp_path / "out")
    (row,) = _read(tmp_path / "out" / "elite.csv").itertuples()
    assert row.panel == "" and image_matches(Image.open(tmp_path / "out" / row.image), picture)


def test_panel_count_mismatch_is_rejected_not_guessed(world):
    pictures = [Image.open(f.image) for f in demo_figures(world)[:3]]
    pairs, why = build_module._panel_pairs(pictures, "Drusen. A. Left eye. B. Right eye.", "")
    assert pairs == [] and "3 picture(s) but 2 panel caption(s)" in why
    pairs, why = build_module._panel_pairs(pictures[:1], "Drusen. A. Left eye. B. Right eye.", "")
    assert why == "" and [p[1:3] for p in pairs] == [("", "Drusen. A. Left eye. B. Right eye.")]


# ------------------------------------------------------------------------------------------ bad PDFs, resuming


def _bad_pdfs(folder: Path):
    enc = fitz.open()
    enc.new_page().insert_text((72, 72), "Fig. 1-1 secret")
    enc.save(folder / "encrypted.pdf", encryption=fitz.PDF_ENCRYPT_AES_256, owner_pw="o", user_pw="u")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.7\n this is not really a PDF \x00\x01")
    (folder / "empty.pdf").write_bytes(b"")
    scan = fitz.open()
    buf = __import__("io").BytesIO()
    drawing_image().save(buf, format="PNG")
    scan.new_page().insert_image(fitz.Rect(72, 72, 372, 372), stream=buf.getvalue())
    scan.save(folder / "scanned.pdf")
    return {"encrypted.pdf": "encrypted: the PDF needs a password", "corrupt.pdf": "not a readable PDF",
            "empty.pdf": "empty file",
            "scanned.pdf": "no text layer", "missing.pdf": "file not found"}


def test_bad_pdfs_get_a_message_each_and_the_good_one_is_built(atlas, tmp_path):
    messages = _bad_pdfs(tmp_path)
    pdfs = [tmp_path / name for name in messages] + [atlas.path]
    report = build_elite(pdfs, tmp_path / "out")
    failed = {Path(r.source).name: r.error for r in report.failed}
    assert set(failed) == set(messages)
    for name, words in messages.items():
        assert name in failed[name] and words in failed[name], failed[name]
    assert report.results[-1].status == "built" and report.pairs == 13


def test_a_crash_loses_nothing_finished_and_the_rerun_skips_it(world, atlas, tmp_path, monkeypatch):
    second = tmp_path / "second.pdf"
    write_sample_atlas(world, second, first_chapter=2)  # same pictures: all 13 become duplicates of the first
    other = tmp_path / "third.pdf"
    shutil.copy(atlas.path, tmp_path / "first.pdf")
    doc = fitz.open()
    doc.new_page().insert_text((72, 72), "Preface without figures.")
    doc.save(other)
    out = tmp_path / "out"
    real = build_module._process_pdf
    calls = []

    def crash_on_second(work):
        calls.append(work.path.name)
        if work.path.name == "second.pdf":
            real(work)  # the images of the PDF in progress are on disk when the process dies
            raise KeyboardInterrupt
        return real(work)

    monkeypatch.setattr(build_module, "_process_pdf", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_elite([tmp_path / "first.pdf", second, other], out)
    assert len(_read(out / "elite.csv")) == 13  # the first PDF's pairs were written before the crash
    assert len(list((out / ".state").glob("*.json"))) == 1
    (leftover,) = (out / "rejected").glob("second-*")  # files of the interrupted PDF are on disk
    stray = out / "images" / leftover.name / "stray.png"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half-written")

    calls.clear()
    monkeypatch.setattr(build_module, "_process_pdf", lambda work: (calls.append(work.path.name), real(work))[1])
    report = build_elite([tmp_path / "first.pdf", second, other], out)
    assert calls == ["second.pdf", "third.pdf"]  # the finished PDF is not redone
    assert [r.status for r in report.results] == ["already built", "built", "built"]
    assert not stray.exists()  # leftovers of the interrupted run are cleared before the PDF is redone
    assert len(_read(out / "elite.csv")) == 13
    rejected = _read(out / "rejected.csv")
    reasons = rejected[rejected["source"] == "second.pdf"]["reason"]
    assert reasons.str.startswith("duplicate of images/first-").sum() == 14  # 13 pictures + its repeat figure


# ------------------------------------------------------------------------------------------ review page


def test_review_page_has_a_checkbox_per_pair_and_exports_csv(built):
    out = built[0]
    page = (out / "review.html").read_text(encoding="utf-8")
    n = len(_read(out / "elite.csv"))
    assert len(re.findall(r'<input type="checkbox" class="accept"', page)) == n
    assert len(re.findall(r"<select", page)) == n
    assert "function exportCsv" in page and 'onclick="exportCsv()"' in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # offline: no external assets
    data = json.loads(re.search(r'<script type="application/json" id="pairs">(.*?)</script>', page, re.S).group(1))
    assert [d["image"] for d in data] == list(_read(out / "elite.csv")["image"])
    for d in data:
        assert f'src="{d["image"]}"' in page and (out / d["image"]).is_file()
    assert "视网膜色素变性" in page


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_review_page_csv_export_quotes_fields(built, tmp_path):
    """Run the page's own toCsv in node on awkward values (comma, quote, newline, Chinese)."""
    page = (built[0] / "review.html").read_text(encoding="utf-8")
    js = page.split("<script>")[1].split("</script>")[0]
    to_csv = js[js.index("function csvCell"):js.index("function acceptedRows")] + \
        js[js.index("function toCsv"):js.index("function exportCsv")]
    script = tmp_path / "t.js"
    script.write_text("const COLUMNS=['image','caption'];\n" + to_csv +
                      "process.stdout.write(toCsv([{image:'a.png',caption:'x, \"y\"\\nz 视网膜'}]));",
                      encoding="utf-8")
    out = subprocess.run(["node", str(script)], capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert out.returncode == 0, out.stderr
    frame = pd.read_csv(__import__("io").StringIO(out.stdout.lstrip("\ufeff")), dtype=str)
    assert frame.loc[0, "caption"] == 'x, "y"\nz 视网膜'
