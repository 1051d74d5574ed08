"""``fundus-vlp predict``: CSV/JSON output, bad files, folders (webp, skipped entries), calibration (Platt,
held-out report, JSON file), eye/patient answers."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import save_tiny_model
from fundus_vlp.cli.main import main
from fundus_vlp.factory import from_pretrained
from fundus_vlp.inference.calibration import Calibration, expected_calibration_error, sigmoid
from fundus_vlp.inference.zero_shot import build_head

LABELS = ["normal", "glaucoma", "cataract"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_overrides):
    root = tmp_path_factory.mktemp("predict")
    save_tiny_model(root / "model", **tiny_overrides)
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
    return build_head(model, labels, True, multilabel).logits(model.embed_images(paths)).double().numpy()


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


def test_multilabel_calibration_is_per_label_platt_reported_held_out_and_saved(setup, capsys):
    root, paths = setup
    z_val = _logits(root / "model", paths, True)
    order = np.argsort(z_val, axis=0)  # per label: the 3 highest logits positive, two middle ones swapped
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
    np.testing.assert_allclose([list(r["probs"].values()) for r in doc["images"]], sigmoid(z_pred), atol=1e-6)

    saved, png = root / "cal.json", root / "rel.png"
    code, out, err = _run(base + ["--json", "--calibrate-on", str(root / "imgs" / "val.csv"), "--save-calibration",
                                  str(saved), "--reliability-diagram", str(png)], capsys)
    assert code == 0, err
    assert "per-label platt scaling" in err and "cross-fitting" in err and "constant 0.5" in err
    doc = json.loads(out)
    calib = doc["calibration"]
    assert calib["method"] == "platt" and set(calib["maps"]) == set(LABELS) and not calib["uncalibrated"]
    assert calib["report"]["ece_before"] == pytest.approx(expected_calibration_error(sigmoid(z_val), y), abs=1e-9)
    maps = {c: (m["a"], m["b"]) for c, m in calib["maps"].items()}
    calibrated = np.stack([sigmoid(maps[c][0] * z_pred[:, k] + maps[c][1]) for k, c in enumerate(LABELS)], axis=1)
    np.testing.assert_allclose([list(r["probs"].values()) for r in doc["images"]], calibrated, atol=1e-6)
    thr = calib["thresholds"]
    for row, probs in zip(doc["images"], calibrated):
        assert row["prediction"] == ";".join(c for c, p in zip(LABELS, probs) if p >= thr[c])
    assert png.read_bytes()[:4] == b"\x89PNG" and Calibration.load(saved).to_dict() == calib

    # the saved file applies the same map; the categorical dataframe format gives the same calibration
    code, out, _ = _run(base + ["--json", "--calibration", str(saved)], capsys)
    np.testing.assert_allclose([list(r["probs"].values()) for r in json.loads(out)["images"]], calibrated, atol=1e-6)
    cats = [repr([c for c in LABELS if r[c]]) for r in cal.to_dict("records")]
    pd.DataFrame({"image": cal["image"], "atributes": "[]", "categories": cats}).to_csv(root / "imgs" / "cat.csv")
    code, out, _ = _run(base + ["--json", "--calibrate-on", str(root / "imgs" / "cat.csv")], capsys)
    assert json.loads(out)["calibration"] == calib


def test_a_one_class_calibration_table_is_an_error_not_a_fit(setup, capsys):
    root, paths = setup
    pd.DataFrame({"image": [p.name for p in paths], **{c: 0 for c in LABELS}}).to_csv(root / "imgs" / "neg.csv",
                                                                                      index=False)
    code, _, err = _run(["--model", str(root / "model"), "--classes", ",".join(LABELS), "--multilabel", str(paths[0]),
                         "--calibrate-on", str(root / "imgs" / "neg.csv")], capsys)
    assert code != 0 and "cannot calibrate" in err and "normal: 0 positive and 6 negative" in err
    assert "ECE" not in err


def test_a_folder_includes_webp_and_names_what_it_skips(setup, capsys, tmp_path):
    root, paths = setup
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.open(paths[0]).save(folder / "a.webp")
    Image.open(paths[1]).save(folder / "b.png")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "up").symlink_to(folder)
    (folder / "dir.png").mkdir()
    (folder / "notes.txt").write_text("not an image")
    code, out, err = _run(["--model", str(root / "model"), "--classes", ",".join(LABELS), str(folder), "--json"],
                          capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert [r["image"] for r in doc["images"]] == [str(folder / "a.webp"), str(folder / "b.png")]
    skipped = {d["path"]: d["reason"] for d in doc["skipped"]}
    assert skipped == {str(folder / "dir.png"): "a folder, not an image file",
                       str(folder / "loop.jpg"): "symbolic link loop",
                       str(folder / "up"): "symbolic link loop (points to a folder above it)"}
    assert f"skipped {folder / 'loop.jpg'}: symbolic link loop" in err


def test_patient_csv_gives_eye_and_patient_answers_that_agree(setup, capsys):
    root, paths = setup
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    table = pd.DataFrame({"patient": ["p1", "p1", "p1", "p2", "p2", "p3", "p4"],
                          "eye": ["OD", "OD", "os", "OD", "OS", "OD", "OS"],
                          "image": [f"imgs/{p.name}" for p in paths[:5]] + ["broken.png", f"imgs/{paths[5].name}"]})
    table.to_csv(root / "patients.csv", index=False)
    code, out, err = _run(["--model", str(root / "model"), "--classes", ",".join(LABELS), "--patient-csv",
                           str(root / "patients.csv"), "--out", str(root / "pp.json")], capsys)
    assert code == 1 and "broken.png" in err  # a failed image is reported, the rest predicted
    doc = json.loads((root / "pp.json").read_text())
    assert len(doc["images"]) == 6
    z = _logits(root / "model", paths[:6], False)
    softmax = lambda v: np.exp(v - v.max()) / np.exp(v - v.max()).sum()  # noqa: E731
    eyes = {("p1", "OD"): softmax(z[:2].mean(0)), ("p1", "OS"): softmax(z[2]), ("p2", "OD"): softmax(z[3]),
            ("p2", "OS"): softmax(z[4]), ("p4", "OS"): softmax(z[5])}
    got = {(e["patient"], e["eye"]): e for e in doc["eyes"]}
    assert set(got) == set(eyes)
    for key, value in eyes.items():
        np.testing.assert_allclose([got[key][c] for c in LABELS], value, atol=1e-6)
        assert got[key]["prediction"] == LABELS[int(np.argmax(value))]
    patients = {p["patient"]: p for p in doc["patients"]}
    for pid in ("p1", "p2"):
        answers = [LABELS[int(np.argmax(v))] for (p, _), v in eyes.items() if p == pid]
        p = patients[pid]
        if all(a == "normal" for a in answers):
            assert p["prediction"] == "normal"
        else:
            sick = [(v.max(), LABELS[int(np.argmax(v))]) for (q, _), v in eyes.items()
                    if q == pid and LABELS[int(np.argmax(v))] != "normal"]
            assert p["prediction"] == max(sick)[1]
        assert p["prediction"] == max(LABELS, key=lambda c: p[c])  # the row shows the deciding eye
    assert patients["p1"]["n_eyes"] == 2 and patients["p1"]["n_images"] == 3 and patients["p1"]["note"] == ""
    assert patients["p3"]["n_eyes"] == 0 and patients["p3"]["prediction"] == ""
    assert patients["p3"]["note"].startswith("no valid image (broken.png: not a recognised image format")
    assert patients["p4"]["n_eyes"] == 1 and patients["p4"]["note"] == "rests on one eye (OS)"

    code, _, err = _run(["--model", str(root / "model"), "--classes", ",".join(LABELS), "--patient-csv",
                         str(root / "patients.csv"), "--out", str(root / "pm.csv")], capsys)
    assert (root / "pm.eyes.csv").is_file() and (root / "pm.patients.csv").is_file()
    table.assign(eye=["OD", "OD", "left", "OD", "OS", "OD", "OS"]).to_csv(root / "bad.csv", index=False)
    code, _, err = _run(["--model", str(root / "model"), "--classes", ",".join(LABELS), "--patient-csv",
                         str(root / "bad.csv")], capsys)
    assert code != 0 and "bad.csv, row 3: eye must be OD (right) or OS (left), got 'left'" in err
