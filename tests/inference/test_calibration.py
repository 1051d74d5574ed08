"""Calibration: ECE and thresholds by hand, per-label Platt beats the shared-temperature failure case, labels
without both classes are never fitted silently, the report is held-out, and the JSON file round-trips."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fundus_vlp.inference.calibration import (Calibration, best_f1_threshold, expected_calibration_error,
                                              fit_calibration, reliability_diagram, sigmoid)


def test_ece_by_hand():
    # bins of width 0.5: {0.2, 0.4} -> mean p 0.3, frequency 0.5; {0.6, 0.9} -> mean p 0.75, frequency 1.0
    probs, y = np.array([0.2, 0.4, 0.6, 0.9]), np.array([0, 1, 1, 1])
    assert expected_calibration_error(probs, y, n_bins=2) == pytest.approx(0.5 * 0.2 + 0.5 * 0.25)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0  # p = 1 lands in the last bin


def test_threshold_maximises_f1_between_values():
    # p >= 0.5 catches both positives and one negative (F1 0.8); p >= 0.7 only the positives (F1 1)
    assert best_f1_threshold(np.array([0.1, 0.4, 0.6, 0.8, 0.9]), np.array([0, 0, 0, 1, 1])) == pytest.approx(0.7)
    assert best_f1_threshold(np.array([0.1, 0.9]), np.array([0, 0])) == 0.5  # no positive: the default


def _shifted_labels(n=400, seed=0):
    """Zero-shot-like logits: informative, but each label sits on its own offset (one far above 0, one below),
    so no single shared temperature can fix them: the failure case of the old calibration."""
    rng = np.random.default_rng(seed)
    true = rng.normal(size=(n, 3)) * 1.5 + np.array([-1.5, -0.5, -2.0])
    y = (rng.random((n, 3)) < sigmoid(true)).astype(float)
    z = 0.8 * true + np.array([4.0, -3.0, 3.5])  # offsets the contrastive head added
    return z, y


def _shared_temperature_ece(z, y):
    grid = np.exp(np.linspace(np.log(0.01), np.log(100), 4001))
    bce = [np.mean(np.logaddexp(0, z / t) - y * z / t) for t in grid]
    return expected_calibration_error(sigmoid(z / grid[int(np.argmin(bce))]), y)


def test_platt_beats_the_constant_baseline_where_a_shared_temperature_does_not():
    z, y = _shifted_labels()
    constant = expected_calibration_error(np.full_like(z, 0.5), y)
    assert _shared_temperature_ece(z, y) > constant  # the failure case: worse than predicting 0.5
    cal = fit_calibration(z, y, ["a", "b", "c"], multilabel=True)
    r = cal.report
    assert cal.method == "platt" and not cal.uncalibrated
    assert r.ece_baseline == pytest.approx(constant) and r.ece_before == pytest.approx(expected_calibration_error(sigmoid(z), y))
    assert r.ece_after < 0.5 * r.ece_baseline and r.ece_after < 0.25 * r.ece_before
    assert r.brier_after < r.brier_before and r.brier_after < r.brier_baseline
    assert "cross-fitting" in r.evaluation and "held-out" in cal.summary()
    # applying the map to the fitting set is close to the held-out figure (no large optimism left out)
    assert expected_calibration_error(cal.apply(z), y) < 0.05


def test_the_report_is_measured_on_images_the_fit_did_not_see():
    # logits unrelated to the labels: an isotonic map fitted and measured on the same images looks calibrated
    # (it memorises), the held-out measure must not
    rng = np.random.default_rng(3)
    z, y = rng.normal(size=(120, 1)), (rng.random((120, 1)) < 0.5).astype(float)
    cal = fit_calibration(z, y, ["noise"], method="isotonic")
    in_sample = expected_calibration_error(cal.apply(z), y)
    assert in_sample < 0.02
    assert cal.report.ece_after > in_sample + 0.03


def test_a_label_without_both_classes_is_never_fitted_silently(tmp_path):
    z, y = _shifted_labels(n=60)
    with pytest.raises(ValueError, match=r"no label has both.*a: 0 positive and 60 negative.*b: 0 positive"):
        fit_calibration(z[:, :2], np.zeros((60, 2)), ["a", "b"])
    y_one = y.copy()
    y_one[:, 1] = 1.0  # every image positive for "b"
    cal = fit_calibration(z, y_one, ["a", "b", "c"])
    assert set(cal.uncalibrated) == {"b"} and "60 positive and 0 negative" in cal.uncalibrated["b"]
    assert "label 'b' left uncalibrated" in cal.summary()
    np.testing.assert_allclose(cal.apply(z)[:, 1], sigmoid(z[:, 1]))  # left as it was, threshold 0.5
    assert cal.thresholds["b"] == 0.5
    with pytest.raises(ValueError, match="same label \\('normal'\\)"):
        fit_calibration(z[:, :2], np.zeros(60), ["normal", "glaucoma"], multilabel=False)


def test_isotonic_option_and_single_label_temperature():
    z, y = _shifted_labels()
    iso = fit_calibration(z, y, ["a", "b", "c"], method="isotonic")
    p = iso.apply(z)
    assert p.min() >= 0 and p.max() <= 1 and iso.report.ece_after < iso.report.ece_baseline
    order = np.argsort(z[:, 0])
    assert np.all(np.diff(p[order, 0]) >= -1e-12)  # monotone in the logit
    rng = np.random.default_rng(0)
    true = rng.normal(size=(400, 3)) * 2
    classes = np.array([rng.choice(3, p=np.exp(t) / np.exp(t).sum()) for t in true])
    cal = fit_calibration(4.0 * true, classes, ["normal", "glaucoma", "cataract"], multilabel=False)
    assert cal.method == "temperature" and cal.temperature == pytest.approx(4.0, rel=0.25)
    assert cal.report.ece_after < cal.report.ece_before
    np.testing.assert_allclose(cal.apply(true).sum(axis=1), 1.0)
    assert (cal.apply(true).argmax(1) == true.argmax(1)).all()  # a temperature never changes the answer


def test_the_calibration_file_is_plain_json_and_round_trips(tmp_path):
    z, y = _shifted_labels(n=80)
    for method in ("platt", "isotonic"):
        cal = fit_calibration(z, y, ["a", "b", "c"], method=method)
        path = cal.save(tmp_path / f"{method}.json")
        doc = json.loads(path.read_text())
        assert doc["format"] == 1 and doc["labels"] == ["a", "b", "c"] and doc["report"]["n_images"] == 80
        back = Calibration.load(path)
        np.testing.assert_allclose(back.apply(z), cal.apply(z), rtol=0, atol=1e-12)
        assert back.thresholds == cal.thresholds
    png = reliability_diagram(cal, tmp_path / "rel.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="fitted in this session"):
        reliability_diagram(back, tmp_path / "no.png")
    (tmp_path / "bad.json").write_text('{"labels": ["a"]}')
    with pytest.raises(ValueError, match="bad.json: not a fundus-vlp calibration file"):
        Calibration.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="labels \\['a', 'b', 'c'\\]"):
        back.check_labels(["a", "b"], multilabel=True)
