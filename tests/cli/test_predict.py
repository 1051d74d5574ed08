"""``fundus-vlp predict``: CSV/JSON output, bad files, multi-label calibration, eye/patient aggregation."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fundus_vlp.cli.main import main
from fundus_vlp.eval.calibration import expected_calibration_error
from fundus_vlp.factory import create_model, from_pretrained
from fundus_vlp.models.inference import label_logits, zero_shot_heads

LABELS = ["normal", "glaucoma", "cataract"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_overrides):
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    create_model("tiny", **tiny_overrides).save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    paths = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 48 + 4 * i, 3), dtype=np.uint8)).save(root / "imgs" / f"i{i}.png")
        paths.append(root / "imgs" / f"i{i}.png")
    return root, paths


def _logits(model_dir, paths, multilabel, labels=LABELS):
    """Image logits through the library pieces the CLI must use (reference for the aggregation maths)."""
    model = from_pretrained(model_dir)
    pos, neg = zero_shot_heads(model, labels, True, multilabel)
    return label_logits(model.embed_images(paths), pos, neg, model.scale()).double().numpy()


def _run(args, capsys):
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_files_are_reported_and_the_rest_predicted_to_csv_and_json(setup, capsys):
    root, paths = setup
    (root / "corrupt.png").write_bytes(b"\x89PNG not really")
    Image.fromarray(np.zeros((120, 120, 3), np.uint8)).save(root / "huge.png")
    args = ["--model", str(root / "model"), "--classes", ",".join(LABELS), str(paths[0]), str(paths[1]),
            str(root / "missing.png"), str(root / "corrupt.png"), str(root / "huge.png"), "--max-pixels", "10000"]
    code, out, err = _run(args + ["--out", str(root / "p.csv")], capsys)
    assert code == 1
    assert "missing.png: file not found" in err and "corrupt.png: not a recognised image format" in err
    assert "huge.png: 120x120 = 14,400 pixels is over the limit of 10,000" in err and "3 image(s) failed, 2 predicted" in err
    table = pd.read_csv(root / "p.csv", index_col="image", keep_default_na=False)
    assert list(table.index) == [str(paths[0]), str(paths[1]), str(root / "missing.png"), str(root / "corrupt.png"),
                                 str(root / "huge.png")]
    assert list(table["error"][:2]) == ["", ""] and "over the limit" in table.loc[str(root / "huge.png"), "error"]
    probs = table.loc[[str(paths[0]), str(paths[1])], LABELS].astype(float).to_numpy()
    expected = torch.tensor(_logits(root / "model", paths[:2], False)).softmax(-1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert list(table["prediction"][:2]) == [LABELS[i] for i in expected.argmax(1)]

    code, out, _ = _run(args + ["--out", str(root / "p.json")], capsys)
    doc = json.loads((root / "p.json").read_text())
    assert code == 1 and len(doc["images"]) == 2 and len(doc["failed"]) == 3 and doc["calibrated"] is False
    np.testing.assert_allclose([list(r["probs"].values()) for r in doc["images"]], expected, atol=1e-6)
    code, _, err = _run(["--model", str(root / "model"), "--classes", "a,b", str(paths[0]), "--out", "x.txt"], capsys)
    assert code != 0 and ".csv or .json" in err


def test_multilabel_calibration_fits_temperature_and_thresholds(setup, capsys):
    root, paths = setup
    # labels that follow the (random) model's logits except for one image per label: the best temperature is
    # then finite and inside the search range (separable labels push it to 0, unrelated ones to infinity)
    z_val = _logits(root / "model", paths, True)
    order = np.argsort(z_val, axis=0)  # per label: the 3 highest logits positive, the two middle ones swapped
    y = np.zeros_like(z_val, dtype=int)
    for k in range(3):
        y[order[[2, 4, 5], k], k] = 1
    cal = pd.DataFrame({"image": [p.name for p in paths], **{c: y[:, k] for k, c in enumerate(LABELS)}})
    cal.to_csv(root / "imgs" / "val.csv", index=False)
    base = ["--model", str(root / "model"), "--classes", ",".join(LABELS), "--multilabel", str(paths[0]), str(paths[3])]

    code, out, err = _run(base + ["--json"], capsys)
    assert code == 0 and "uncalibrated" in err
    z_pred = _logits(root / "model", [paths[0], paths[3]], True)
    doc = json.loads(out)
    np.testing.assert_allclose([list(r["probs"].values()) for r in doc["images"]], 1 / (1 + np.exp(-z_pred)),
                               atol=1e-6)

    code, out, err = _run(base + ["--json", "--calibrate-on", str(root / "imgs" / "val.csv")], capsys)
    assert code == 0, err
    assert "uncalibrated" not in err and "ECE" in err
    doc = json.loads(out)
    calib = doc["calibration"]
    # the reference: a fine grid over T of the same binary cross-entropy, ECE from its definition
    grid = np.exp(np.linspace(np.log(0.01), np.log(100), 20001))
    bce = [np.mean(np.logaddexp(0, z_val / t) - y * z_val / t) for t in grid]
    assert 0.02 < calib["temperature"] < 50
    assert calib["temperature"] == pytest.approx(grid[int(np.argmin(bce))], rel=2e-3)
    assert calib["ece_before"] == pytest.approx(expected_calibration_error(1 / (1 + np.exp(-z_val)), y), abs=1e-9)
    t = calib["temperature"]
    assert calib["ece_after"] == pytest.approx(expected_calibration_error(1 / (1 + np.exp(-z_val / t)), y), abs=1e-9)
    assert f"ECE {calib['ece_before']:.4f} -> {calib['ece_after']:.4f}" in err
    calibrated = 1 / (1 + np.exp(-z_pred / t))
    np.testing.assert_allclose([list(r["probs"].values()) for r in doc["images"]], calibrated, atol=1e-6)
    thr = calib["thresholds"]
    for row, probs in zip(doc["images"], calibrated):
        assert row["prediction"] == ";".join(c for c, p in zip(LABELS, probs) if p >= thr[c])

    # the categorical dataframe format gives the same calibration
    cats = [repr([c for c in LABELS if r[c]]) for r in cal.to_dict("records")]
    pd.DataFrame({"image": cal["image"], "atributes": "[]", "categories": cats}).to_csv(root / "imgs" / "cat.csv")
    code, out, _ = _run(base + ["--json", "--calibrate-on", str(root / "imgs" / "cat.csv")], capsys)
    assert json.loads(out)["calibration"] == calib
    code, _, err = _run(base[:-3] + [str(paths[0]), "--calibrate-on", str(root / "imgs" / "val.csv")], capsys)
    assert code != 0 and "add --multilabel" in err


def test_patient_csv_aggregates_eyes_by_mean_logits_and_patients_by_max(setup, capsys):
    root, paths = setup
    table = pd.DataFrame({"patient": ["p1", "p1", "p1", "p2", "p2"], "eye": ["OD", "OD", "os", "OD", "OS"],
                          "image": [f"imgs/{p.name}" for p in paths[:5]]})
    table.to_csv(root / "patients.csv", index=False)
    code, out, err = _run(["--model", str(root / "model"), "--classes", ",".join(LABELS), "--patient-csv",
                           str(root / "patients.csv"), "--out", str(root / "pp.json")], capsys)
    assert code == 0, err
    doc = json.loads((root / "pp.json").read_text())
    assert len(doc["images"]) == 5 and doc["patient_rule"] == "max"
    z = _logits(root / "model", paths[:5], False)
    softmax = lambda v: np.exp(v - v.max()) / np.exp(v - v.max()).sum()  # noqa: E731
    eyes = {("p1", "OD"): softmax(z[:2].mean(0)), ("p1", "OS"): softmax(z[2]), ("p2", "OD"): softmax(z[3]),
            ("p2", "OS"): softmax(z[4])}
    got = {(e["patient"], e["eye"]): [e[c] for c in LABELS] for e in doc["eyes"]}
    assert set(got) == set(eyes)
    for key, value in eyes.items():
        np.testing.assert_allclose(got[key], value, atol=1e-6)
    p1 = next(p for p in doc["patients"] if p["patient"] == "p1")
    assert p1["normal"] == pytest.approx(min(eyes["p1", "OD"][0], eyes["p1", "OS"][0]), abs=1e-6)  # healthy: min
    assert p1["glaucoma"] == pytest.approx(max(eyes["p1", "OD"][1], eyes["p1", "OS"][1]), abs=1e-6)  # disease: max
    assert p1["n_eyes"] == 2 and p1["n_images"] == 3

    code, _, err = _run(["--model", str(root / "model"), "--classes", ",".join(LABELS), "--patient-csv",
                         str(root / "patients.csv"), "--patient-rule", "mean", "--out", str(root / "pm.csv")], capsys)
    assert code == 0, err
    patients = pd.read_csv(root / "pm.patients.csv", index_col="patient")
    assert patients.loc["p1", "normal"] == pytest.approx((eyes["p1", "OD"][0] + eyes["p1", "OS"][0]) / 2, abs=1e-6)
    assert (root / "pm.eyes.csv").is_file() and (root / "pm.csv").is_file()

    table.assign(eye=["OD", "OD", "left", "OD", "OS"]).to_csv(root / "bad.csv", index=False)
    code, _, err = _run(["--model", str(root / "model"), "--classes", ",".join(LABELS), "--patient-csv",
                         str(root / "bad.csv")], capsys)
    assert code != 0 and "bad.csv, row 3: eye must be OD (right) or OS (left), got 'left'" in err
