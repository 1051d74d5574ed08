"""ECE, temperature and threshold fitting on hand-computed inputs."""
from __future__ import annotations

import numpy as np
import pytest

from fundus_vlp.eval.calibration import best_f1_threshold, expected_calibration_error, fit_calibration


def test_ece_by_hand():
    # bins of width 0.5: {0.2, 0.4} -> mean p 0.3, frequency 0.5; {0.6, 0.9} -> mean p 0.75, frequency 1.0
    probs, y = np.array([0.2, 0.4, 0.6, 0.9]), np.array([0, 1, 1, 1])
    assert expected_calibration_error(probs, y, n_bins=2) == pytest.approx(0.5 * 0.2 + 0.5 * 0.25)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0  # p = 1 lands in the last bin


def test_threshold_maximises_f1_between_values():
    # p >= 0.5 catches both positives and one negative (F1 0.8); p >= 0.7 only the positives (F1 1)
    assert best_f1_threshold(np.array([0.1, 0.4, 0.6, 0.8, 0.9]), np.array([0, 0, 0, 1, 1])) == pytest.approx(0.7)
    assert best_f1_threshold(np.array([0.1, 0.9]), np.array([0, 0])) == 0.5  # no positive: the default


def test_overconfident_logits_get_a_temperature_above_one():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(size=(400, 2))
    y = (rng.random((400, 2)) < 1 / (1 + np.exp(-true_logit))).astype(float)
    calib = fit_calibration(4.0 * true_logit, y, ["a", "b"])  # four times too confident
    assert calib.temperature == pytest.approx(4.0, rel=0.25)
    assert calib.ece_after < calib.ece_before
