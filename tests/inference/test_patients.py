"""Patient answers never contradict their eyes: a seeded property test over many random eye predictions
(single- and multi-label), plus eye/image counts and patients without a valid image."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fundus_vlp.inference.calibration import sigmoid, softmax
from fundus_vlp.inference.patients import PatientRule, aggregate

LABELS = ["normal", "glaucoma", "cataract", "drusen"]
CASES = 80


def _random_patients(rng, multilabel):
    """Image logits and a patient table: 1-4 patients, each with one or two eyes of one to three images."""
    rows, logits = [], {}
    for p in range(rng.integers(1, 5)):
        for eye in rng.choice(["OD", "OS"], size=rng.integers(1, 3), replace=False):
            for i in range(rng.integers(1, 4)):
                name = f"p{p}_{eye}_{i}.png"
                rows.append({"patient": f"p{p}", "eye": eye, "image": name})
                # logits spread so that eyes often disagree and the healthy label often wins
                logits[name] = rng.normal(0, rng.choice([0.3, 2.5]), len(LABELS)) + np.array([rng.choice([0.0, 0.5]), 0, 0, 0])
    table = pd.DataFrame(rows)
    return pd.DataFrame.from_dict(logits, orient="index", columns=LABELS), table


@pytest.mark.parametrize("multilabel", [False, True])
def test_patient_answers_follow_the_rule_for_random_eyes(multilabel):
    rng = np.random.default_rng(7 + multilabel)
    to_probs = sigmoid if multilabel else softmax
    for case in range(CASES):
        image_logits, table = _random_patients(rng, multilabel)
        thresholds = {c: float(rng.uniform(0.2, 0.8)) for c in LABELS}
        rule = PatientRule(LABELS, multilabel, ("normal",), thresholds)
        eyes, patients = aggregate(image_logits, table, to_probs, rule)
        for patient, row in patients.iterrows():
            mine = eyes.xs(patient, level="patient")
            assert row["n_eyes"] == len(mine) and row["n_images"] == int((table["patient"] == patient).sum())
            if multilabel:
                said = set(filter(None, row["prediction"].split(";")))
                sick = {c for c in LABELS[1:] if (mine[c] >= thresholds[c]).any()}
                assert said - {"normal"} == sick, (case, patient)  # a disease iff some eye has it
                assert ("normal" in said) == (not sick), (case, patient)  # healthy iff no disease
                for c in LABELS[1:]:
                    assert row[c] == pytest.approx(mine[c].max())
            else:
                answers = list(mine["prediction"])
                if all(a == "normal" for a in answers):
                    assert row["prediction"] == "normal", (case, patient)
                else:
                    diseased = mine[mine["prediction"] != "normal"]
                    best = diseased[LABELS].max(axis=1).idxmax()
                    assert row["prediction"] == diseased.loc[best, "prediction"] != "normal", (case, patient)
                assert row["prediction"] in answers
                assert row[LABELS].astype(float).idxmax() == row["prediction"]  # the row shown agrees


def test_eye_and_image_counts_and_patients_without_a_valid_image():
    table = pd.DataFrame({"patient": ["a", "a", "a", "b", "c", "c"], "eye": ["OD", "OD", "OS", "OD", "OD", "OS"],
                          "image": ["a1", "a2", "a3", "b1", "c1", "c2"]})
    z = pd.DataFrame(np.array([[3.0, 0, 0, 0], [2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 2.0, 0]]),
                     index=["a1", "a2", "a3", "c1"], columns=LABELS)
    failed = [("b1", "file not found"), ("c2", "corrupt or truncated image")]
    eyes, patients = aggregate(z, table, softmax, PatientRule(LABELS, False), failed)
    assert patients.loc["a", "prediction"] == "glaucoma" and patients.loc["a", "eye"] == "OS"
    assert (patients.loc["a", "n_eyes"], patients.loc["a", "n_images"]) == (2, 3) and patients.loc["a", "note"] == ""
    assert patients.loc["b", "n_eyes"] == 0 and patients.loc["b", "note"] == "no valid image (b1: file not found)"
    assert patients.loc["c", "note"] == "rests on one eye (OD); eye OS has no valid image; 1 of 2 images failed"
    assert eyes.loc[("a", "OD"), "n_images"] == 2
