"""Shipped experiment definitions against the real KeepFIT/FLAIR transfer dataframes (skipped if absent)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fundus_vlp.eval.experiments import (Experiment, ExperimentError, builtin_experiments, experiment_from_dict,
                                         get_experiment, load_labeled_images)

TRANSFER = Path(__file__).resolve().parents[3] / "shared" / "data" / "keepfit_dataframes" / "transferability"
needs_data = pytest.mark.skipif(not TRANSFER.is_dir(), reason="real KeepFIT dataframes not available")

# class counts of the shipped transfer dataframes (first category mapped through the targets)
EXPECTED = {
    "25_REFUGE": [360, 40],
    "13_FIVES": [200, 200, 200, 200],
    "08_ODIR200x3": [200, 200, 200],
    "AMD": [89, 311],
    "02_MESSIDOR": [1017, 270, 347, 75, 35],
    "36_ACRIMA": [309, 396],
    "37_DeepDRiD": [714, 186, 326, 282, 92],
    "TAOP": [642, 647, 647, 423, 641],
}


def test_builtin_experiments_are_all_shipped():
    assert set(EXPECTED) <= set(builtin_experiments())


@needs_data
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_experiments_read_the_real_dataframes(name, tmp_path):
    exp = get_experiment(name, dataframe_dir=str(TRANSFER), image_root=str(tmp_path))
    data = load_labeled_images(exp, check_files=False)
    train = ~data.official_test
    assert np.bincount(data.labels[train], minlength=len(exp.classes)).tolist() == EXPECTED[name]
    if name == "TAOP":
        assert data.official_test.sum() == 297 and not exp.zero_shot
    if name == "37_DeepDRiD":
        assert data.official_test.sum() == 400
        assert len(set(data.groups[train])) == 400 and not set(data.groups[train]) & set(data.groups[~train])
    if name == "08_ODIR200x3":
        assert len(set(data.groups)) == 296  # 600 images of 296 patients: splits must be patient-level
    if exp.task == "binary":
        assert exp.positive in ("glaucoma", "age related macular degeneration")


def test_relative_dataframe_without_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FUNDUS_VLP_DATAFRAMES", raising=False)
    exp = get_experiment("13_FIVES", image_root=str(tmp_path))
    with pytest.raises(ExperimentError, match="dataframe_dir"):
        load_labeled_images(exp)


def test_experiment_validation():
    with pytest.raises(ExperimentError, match="unknown experiment key"):
        experiment_from_dict({"name": "x", "classes": ["a", "b"], "clases": 1})
    with pytest.raises(ExperimentError, match="binary"):
        Experiment(name="x", classes=["a", "b", "c"], task="binary")
    with pytest.raises(ExperimentError, match="positive"):
        Experiment(name="x", classes=["a", "b"], task="binary", positive="z")
    exp = Experiment(name="x", classes=["no glaucoma", "glaucoma"], task="binary", positive="glaucoma")
    assert exp.positive_index == 1 and exp.targets == {"no glaucoma": 0, "glaucoma": 1}
