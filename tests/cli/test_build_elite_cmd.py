"""`fundus-vlp build-elite`: arguments, overrides, exit status, zero-shot modality with a model."""
from __future__ import annotations

import copy

import pandas as pd
import pytest

from conftest import TINY_WORLD
from fundus_vlp.cli.build_elite_cmd import model_modality_classifier, split_inputs
from fundus_vlp.cli.main import main
from fundus_vlp.demo_world import DemoWorldCfg, build_demo_world
from fundus_vlp.elite_builder import MODALITIES
from fundus_vlp.elite_builder.sample_atlas import demo_figures, write_sample_atlas


@pytest.fixture(scope="module")
def world():
    return build_demo_world(DemoWorldCfg(**copy.deepcopy(TINY_WORLD)))


@pytest.fixture(scope="module")
def atlas_pdf(world, tmp_path_factory):
    return write_sample_atlas(world, tmp_path_factory.mktemp("atlas") / "atlas.pdf").path


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build-elite", "--help"])
    assert exc.value.code == 0 and "review.html" in capsys.readouterr().out


def test_pdfs_and_overrides_are_told_apart(tmp_path):
    pdf = tmp_path / "a=b.pdf"
    pdf.write_bytes(b"")
    assert split_inputs([str(pdf), "x.pdf", "max_caption_gap=0.4"]) == ([str(pdf), "x.pdf"], ["max_caption_gap=0.4"])


def test_build_then_rerun_skips_and_bad_pdf_sets_exit_status(atlas_pdf, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build-elite", str(atlas_pdf), "--out", str(out), "dedup_max_distance=0"]) == 0
    text = capsys.readouterr().out
    assert "built" in text and "13 pairs" in text and (out / "review.html").is_file()
    bad = tmp_path / "bad.pdf"
    bad.write_text("not a pdf")
    assert main(["build-elite", str(bad), str(atlas_pdf), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert f"FAILED  {bad}: not a readable PDF" in text and "already built" in text


def test_a_typo_in_an_override_is_a_config_error(atlas_pdf, tmp_path, capsys):
    assert main(["build-elite", str(atlas_pdf), "--out", str(tmp_path), "max_caption_gapp=0.4"]) == 2
    assert "max_caption_gapp" in capsys.readouterr().err


def test_zero_shot_modality_with_a_model(tiny_model, world, atlas_pdf, tmp_path):
    classify = model_modality_classifier(tiny_model)
    from PIL import Image

    probs = classify([Image.open(f.image) for f in demo_figures(world)[:3]])
    assert len(probs) == 3 and all(set(p) == set(MODALITIES) and abs(sum(p.values()) - 1) < 1e-5 for p in probs)

    tiny_model.save_pretrained(tmp_path / "model")
    stats_out, model_out = tmp_path / "stats", tmp_path / "zs"
    assert main(["build-elite", str(atlas_pdf), "--out", str(stats_out)]) == 0
    assert main(["build-elite", str(atlas_pdf), "--out", str(model_out), "--model", str(tmp_path / "model"),
                 "--device", "cpu"]) == 0
    zs = pd.read_csv(model_out / "elite.csv", keep_default_na=False)
    rejected = pd.read_csv(model_out / "rejected.csv", keep_default_na=False)
    by_model = rejected["reason"].str.contains("zero-shot").sum()
    # every picture was classified by the model (untrained: any answer); the repeated picture of fig. 1-11
    # is classified too when its first print was rejected as "other"
    assert len(zs) + by_model in (13, 14) and not rejected["reason"].str.contains(r"\(stats").any()
    stats = pd.read_csv(stats_out / "elite.csv", keep_default_na=False).set_index("image")["confidence"]
    assert zs.empty or (zs.set_index("image")["confidence"] != stats.reindex(zs["image"])).any()
