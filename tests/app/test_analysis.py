"""What the web app computes and shows: labels parsed and defaulted, probabilities equal to ``model.classify``
with and without knowledge, captions from the decoder, and a table whose cells name image, prompts and label."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from fundus_vlp.app.analysis import (DEFAULT_LABELS, Analyzer, bar_chart, card_labels, default_labels,
                                     label_problem, parse_labels, probability_table_html, status_markdown)
from fundus_vlp.app.captions import captions_html
from fundus_vlp.app.uploads import check_uploads
from fundus_vlp.data.images import load_image
from fundus_vlp.data.transforms import build_transform
from fundus_vlp.factory import create_model

LABELS = ["normal", "glaucoma", "cataract"]


def test_labels_are_parsed_from_lines_and_commas():
    assert parse_labels(" normal\nglaucoma, cataract\n\n, glaucoma \n") == ["normal", "glaucoma", "cataract"]
    assert parse_labels("") == [] and parse_labels(None) == []


def test_label_problems():
    assert "at least two labels" in label_problem(["normal"], multilabel=False)
    assert label_problem(["normal"], multilabel=True) is None
    assert "at most 40" in label_problem([str(i) for i in range(41)], multilabel=True)


def test_default_labels_come_from_the_model_card_else_the_knowledge_base(tmp_path, kb):
    assert default_labels(tmp_path) == list(DEFAULT_LABELS)
    # every default has descriptions, so "with knowledge" really differs from "names only"
    assert all(kb.descriptions(label) for label in DEFAULT_LABELS)
    (tmp_path / "README.md").write_text("---\nlibrary_name: fundus-vlp\nlabels: [normal, drusen , 'macular hole']\n"
                                        "---\n# card\n")
    assert card_labels(tmp_path) == ["normal", "drusen", "macular hole"] == default_labels(tmp_path)
    (tmp_path / "README.md").write_text("---\nlabels: not a list\n---\n")
    assert card_labels(tmp_path) is None
    (tmp_path / "README.md").write_text("# a card without front matter\nlabels: [a, b]\n")
    assert card_labels(tmp_path) is None


@pytest.fixture
def decoder_model(tiny_overrides, tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny", **tiny_overrides, **{"decoder.enabled": True}).eval()
    return model, model.save_pretrained(tmp_path / "model")


def _upload(tmp_path):
    rng = np.random.default_rng(1)
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), np.uint8)).save(a)
    Image.fromarray(rng.integers(0, 256, (64, 40, 3), np.uint8)).save(b)
    bad = tmp_path / "c.png"
    bad.write_text("not an image")
    return [a, bad, b]


def test_run_matches_classify_with_and_without_knowledge(decoder_model, tmp_path):
    model, model_dir = decoder_model
    files = _upload(tmp_path)
    analyzer = Analyzer(model, model_dir)
    for multilabel in (False, True):
        result = analyzer.run(check_uploads(files), LABELS, multilabel=multilabel)
        assert result.problem is None and result.names == ["a.png", "b.jpg"] and result.rejected[0][0] == "c.png"
        for key, knowledge in (("with knowledge", True), ("names only", False)):
            expected = model.classify([files[0], files[2]], LABELS, domain_knowledge=knowledge, multilabel=multilabel)
            np.testing.assert_allclose(result.probabilities[key].to_numpy(), expected.to_numpy(), atol=1e-6)
            assert list(result.probabilities[key].index) == ["a.png", "b.jpg"]
    with_kb, names_only = result.probabilities["with knowledge"], result.probabilities["names only"]
    assert not np.allclose(with_kb.to_numpy(), names_only.to_numpy())
    # captions: the decoder's greedy output for each image
    preprocess = build_transform(model.cfg.preprocess, train=False)
    ids = model.generate(torch.stack([preprocess(load_image(files[0]))]), num_beams=1)
    assert result.captions[0] == model.tokenizer.batch_decode(ids)[0].strip()
    assert result.neighbours is None and analyzer.index is None


def test_nothing_usable_is_a_message_not_an_error(decoder_model, tmp_path):
    model, model_dir = decoder_model
    bad = tmp_path / "x.png"
    bad.write_text("no")
    analyzer = Analyzer(model, model_dir)
    result = analyzer.run(check_uploads([bad]), LABELS)
    assert result.problem == "no usable image" and not result.probabilities
    text = status_markdown(result)
    assert "Nothing to show" in text and "**x.png** was not analysed: not an image file" in text
    assert "upload at least one" in analyzer.run(check_uploads([]), LABELS).problem
    assert "at least two labels" in analyzer.run(check_uploads(_upload(tmp_path)[:1]), ["normal"]).problem
    assert probability_table_html(result) == "" and bar_chart(result) is None and not result.captions


def test_table_cells_carry_image_prompts_and_label(decoder_model, tmp_path):
    model, model_dir = decoder_model
    uploads = check_uploads(_upload(tmp_path))
    result = Analyzer(model, model_dir).run(uploads, LABELS)
    page = probability_table_html(result, decimals=3)
    cells = re.findall(r'data-image="([^"]+)" data-prompts="([^"]+)" data-label="([^"]+)"[^>]*>([0-9.]+)<', page)
    assert len(cells) == 2 * 2 * 3
    for image, prompts, label, text in cells:
        assert float(text) == pytest.approx(result.probabilities[prompts].loc[image, label], abs=5e-4)
    fig = bar_chart(result, uploads.images)
    assert len(fig.axes) == 4  # a thumbnail and a bar panel per image
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == LABELS
    assert 'data-image="b.jpg"' in captions_html(result.names, result.captions)


def test_a_calibration_in_the_model_folder_is_applied_when_it_fits_the_labels(decoder_model, tmp_path):
    from fundus_vlp.inference.calibration import Calibration, LabelMap
    from fundus_vlp.inference.pipeline import predict

    model, model_dir = decoder_model
    files = _upload(tmp_path)
    cal = Calibration(labels=LABELS, multilabel=True, method="platt",
                      maps={c: LabelMap("platt", a=0.5, b=-1.0 + k) for k, c in enumerate(LABELS)},
                      thresholds={c: 0.5 for c in LABELS})
    cal.save(model_dir / "calibration.json")
    analyzer = Analyzer(model, model_dir)
    result = analyzer.run(check_uploads(files), LABELS, multilabel=True)
    expected = predict(model, [files[0], files[2]], LABELS, multilabel=True, calibration=cal).probabilities
    np.testing.assert_allclose(result.probabilities["with knowledge"].to_numpy(), expected.to_numpy(), atol=1e-9)
    assert result.calibrated and "calibrated with calibration.json" in status_markdown(result)
    assert "knowledge prompts calibrated" in probability_table_html(result)
    other = analyzer.run(check_uploads(files[:1]), LABELS[:2], multilabel=True)  # other labels: uncalibrated
    assert not other.calibrated and "these probabilities are uncalibrated" in status_markdown(other)
