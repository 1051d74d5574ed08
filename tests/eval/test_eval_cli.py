"""``fundus-vlp eval`` (every mode) and ``fundus-vlp predict`` end to end on tiny data, plus bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import TINY_WORLD, save_tiny_model, write_noise_dataframe
from fundus_vlp.cli.main import main

CLASSES = ["normal", "glaucoma", "cataract"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("eval_model") / "tiny")


@pytest.fixture(scope="session")
def eval_config(tmp_path_factory) -> Path:
    """A small, fast evaluation config (also exercises --config)."""
    d = tmp_path_factory.mktemp("eval_cfg")
    world_cache = d / "world"
    cfg = d / "eval.yaml"
    cfg.write_text(
        f"folds: 2\nbootstrap: 50\nprogress: false\ndemo_cache_dir: {world_cache}\n"
        f"demo: {json.dumps(TINY_WORLD)}\n"
        "few_shot: {shots: [1], optim: {epochs: 2, min_steps: 5}, alphas: [0.0, 1.0], betas: [5.0],"
        " clip_adapter_ratios: [0.2]}\n"
        "linear_probe: {c_grid: [0.1, 10.0]}\n"
        "finetune: {epochs: 1, batch_size: 4}\n")
    return cfg


@pytest.fixture(scope="session")
def real_format(tmp_path_factory) -> dict:
    """A dataframe in the real KeepFIT format (unnamed index, list literals) with PNGs and an experiment YAML."""
    root = tmp_path_factory.mktemp("real_fmt")
    rows = []
    for i in range(24):
        c = (i // 2) % 3  # both eyes of a patient share the label
        rel = f"07_SET/images/p{i // 2}_{'left' if i % 2 else 'right'}.png"
        rows.append((rel, 60 + 60 * c, [CLASSES[c], "a disease"]))
    write_noise_dataframe(root / "07_SET.csv", root, rows, std=20, shape=(50, 60, 3))
    (root / "07_SET.yaml").write_text(
        "name: 07_SET\ndataframe: 07_SET.csv\ntask: multiclass\n"
        f"classes: {json.dumps(CLASSES)}\n"
        "group_pattern: 'images/(p\\d+)_'\n")
    return {"root": root, "yaml": root / "07_SET.yaml", "csv": root / "07_SET.csv"}


def _run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("mode", ["zero-shot", "few-shot", "linear-probe", "fine-tune", "retrieval"])
def test_every_mode_runs_on_the_demo_world(mode, model_dir, eval_config, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = _run(["eval", mode, "--model", str(model_dir), "--experiment", "demo:demo_unseen",
                                 "--config", str(eval_config), "--output-dir", str(out)], capsys)
    assert code == 0, stderr
    res = json.loads((out / "results.json").read_text())
    assert res["modes"] == [mode] and res["rows"]
    assert {r["mode"] for r in res["rows"]} == {mode}
    assert (out / "config.yaml").is_file() and "results.json" in stdout
    if mode != "retrieval":
        assert any(p.endswith(".png") for p in res["plots"])
        row = res["rows"][-1]
        assert 0.0 <= row["metrics"]["aca"] <= 1.0 and "aca" in row["ci95"]
    else:
        assert "i2t_r@10" in res["rows"][0]["metrics"]
    if mode == "few-shot":
        assert (out / "shots_aca.png").is_file()
        assert {r["method"] for r in res["rows"]} == {"clip_adapter", "tip_adapter", "tip_adapter_f", "linear_probe"}


def test_real_format_dataframe_all_modes(model_dir, eval_config, real_format, tmp_path, capsys):
    out = tmp_path / "real"
    code, stdout, stderr = _run(["eval", "zero-shot,few-shot,linear-probe,fine-tune", "--model", str(model_dir),
                                 "--experiment", str(real_format["yaml"]), "--image-root", str(real_format["root"]),
                                 "--config", str(eval_config), "--output-dir", str(out), "finetune.mode=lp_ft"],
                                capsys)
    assert code == 0, stderr
    res = json.loads((out / "results.json").read_text())
    assert {r["mode"] for r in res["rows"]} == {"zero-shot", "few-shot", "linear-probe", "fine-tune"}
    assert "07_SET" in stdout and res["experiment"]["group_pattern"]


def test_missing_image_names_file_and_row(model_dir, real_format, tmp_path, capsys):
    csv = real_format["csv"].read_text().replace("p3_left.png", "gone.png")
    (tmp_path / "07_SET.csv").write_text(csv)
    yaml = real_format["yaml"].read_text()
    (tmp_path / "exp.yaml").write_text(yaml)
    code, _, stderr = _run(["eval", "zero-shot", "--model", str(model_dir), "--experiment", str(tmp_path / "exp.yaml"),
                            "--image-root", str(real_format["root"]), "--output-dir", str(tmp_path / "o")], capsys)
    assert code != 0
    assert "gone.png" in stderr and "row 8" in stderr


def test_unknown_class_is_an_error_unless_dropped(model_dir, real_format, tmp_path, capsys):
    csv = real_format["csv"].read_text().replace("['cataract', 'a disease']", "['drusen']", 1)
    (tmp_path / "07_SET.csv").write_text(csv)
    yaml = real_format["yaml"].read_text()
    (tmp_path / "exp.yaml").write_text(yaml)
    args = ["eval", "zero-shot", "--model", str(model_dir), "--experiment", str(tmp_path / "exp.yaml"),
            "--image-root", str(real_format["root"]), "--output-dir", str(tmp_path / "o"), "bootstrap=0",
            "zero_shot.on_fold_splits=false"]
    code, _, stderr = _run(args, capsys)
    assert code != 0 and "row 5" in stderr and "'drusen'" in stderr
    (tmp_path / "exp.yaml").write_text(yaml + "drop_unmapped: true\n")
    code, stdout, stderr = _run(args, capsys)
    assert code == 0, stderr
    assert "1 rows dropped" in stdout


def test_bad_mode_and_typo_exit_nonzero(model_dir, capsys):
    code, _, err = _run(["eval", "zero-shoot", "--model", str(model_dir), "--experiment", "demo:demo_unseen"], capsys)
    assert code != 0 and "unknown mode" in err
    code, _, err = _run(["eval", "zero-shot", "--model", str(model_dir), "--experiment", "demo:demo_unseen",
                         "few_shot.shot=[1]"], capsys)
    assert code != 0 and "shot" in err
    code, _, err = _run(["eval", "zero-shot", "--model", str(model_dir), "--experiment", "NOPE"], capsys)
    assert code != 0 and "unknown experiment" in err


def test_help_explains_modes(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for mode in ("zero-shot", "few-shot", "linear-probe", "fine-tune", "retrieval", "segmentation"):
        assert mode in text


def test_list_experiments(capsys):
    code, out, _ = _run(["eval", "--list-experiments"], capsys)
    assert code == 0
    for name in ("25_REFUGE", "13_FIVES", "08_ODIR200x3", "02_MESSIDOR", "36_ACRIMA", "37_DeepDRiD", "AMD", "TAOP",
                 "13_FIVES_vessels", "25_REFUGE_disc_cup", "demo:demo_segmentation"):
        assert name in out


def test_predict_on_the_skimage_retina(model_dir, tmp_path, capsys):
    from skimage import data

    png = tmp_path / "retina.png"
    Image.fromarray(data.retina()).save(png)
    code, out, err = _run(["predict", "--model", str(model_dir), "--classes", "normal,glaucoma,cataract", str(png),
                           "--device", "cpu"], capsys)
    assert code == 0, err
    assert "retina.png" in out and "glaucoma" in out
    code, out, err = _run(["predict", "--model", str(model_dir), "--classes", "normal,glaucoma", str(png), "--json"],
                          capsys)
    assert code == 0, err
    res = json.loads(out)["images"]
    assert res[0]["prediction"] in ("normal", "glaucoma")
    assert sum(res[0]["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    code, _, err = _run(["predict", "--model", str(model_dir), "--classes", "normal", str(png)], capsys)
    assert code != 0 and "at least two" in err
