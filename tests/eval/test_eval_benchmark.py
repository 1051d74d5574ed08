"""``fundus-vlp benchmark``: shared folds, paired statistics in the table, resume, image-only models."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fundus_vlp.cli.main import main

CLASSES = ["normal", "glaucoma", "cataract"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """36 images of 3 classes (colour-coded, so models differ) and their experiment YAML."""
    root = tmp_path_factory.mktemp("bench_exp")
    rng = np.random.default_rng(0)
    lines = [",image,atributes,categories"]
    for i in range(36):
        c = i % 3
        arr = np.clip(rng.normal(60 + 60 * c, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"{i}.png")
        lines.append(f"{i},{i}.png,[],['{CLASSES[c]}']")
    (root / "toy.csv").write_text("\n".join(lines) + "\n")
    (root / "toy.yaml").write_text(f"name: toy\ndataframe: toy.csv\nimage_root: {root}\nclasses: {json.dumps(CLASSES)}\n")
    return root / "toy.yaml"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    from fundus_vlp.factory import create_model

    root = tmp_path_factory.mktemp("bench_models")
    out = {}
    for name, seed in (("alpha", 0), ("beta", 1)):
        torch.manual_seed(seed)
        create_model("tiny").save_pretrained(root / name)
        out[name] = root / name
    shutil.copytree(out["alpha"], root / "alpha_copy")  # the same weights under another name
    out["alpha_copy"] = root / "alpha_copy"
    torch.manual_seed(2)
    create_model("tiny-image-only").save_pretrained(root / "retina_only")  # no text tower, its own preprocessing
    out["retina_only"] = root / "retina_only"
    return out


@pytest.fixture(scope="module")
def bench_config(tmp_path_factory) -> Path:
    cfg = tmp_path_factory.mktemp("bench_cfg") / "bench.yaml"
    cfg.write_text("n_boot: 200\nprogress: false\n"
                   "eval: {folds: 3, few_shot: {shots: [2], methods: [prototype, knn, linear_probe]},"
                   " linear_probe: {c_grid: [0.1, 10.0]}}\n")
    return cfg


def _cfg(models, experiment, out, names, **kw):
    from fundus_vlp.eval.benchmark import BenchmarkCfg

    cfg = BenchmarkCfg(models=[str(models[n]) for n in names], experiments=[str(experiment)], output_dir=str(out),
                       n_boot=100, progress=False, **kw)
    cfg.eval.folds = 2
    cfg.eval.few_shot.shots = [2]
    cfg.eval.linear_probe.c_grid = [1.0]
    return cfg


def test_cli_table_statistics_and_identical_copy(models, experiment, bench_config, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "--models", str(models["alpha"]), str(models["beta"]), str(models["alpha_copy"]),
                 "--experiments", str(experiment), "--config", str(bench_config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "alpha (ref)" in printed and "9 cells computed, 0 reused" in printed
    for name in ("benchmark.md", "benchmark.csv", "benchmark.json", "forest.png", "run.json"):
        assert (out / name).is_file(), name
    comp = json.loads((out / "benchmark.json").read_text())
    entries = comp["entries"]
    settings = {(e["mode"], e["method"], e["shots"]) for e in entries}
    assert settings == {("zero-shot", "zero-shot", None), ("few-shot", "prototype", 2), ("few-shot", "knn", 2),
                        ("few-shot", "linear_probe", 2), ("linear-probe", "linear_probe", None)}
    from scipy import stats as sps

    for e in entries:
        assert e["status"] == "ok" and e["folds"] == 3
        v = np.array(e["per_fold"])  # the cell: mean ± t(0.975, 2)·s/√3 over the folds
        half = sps.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
        assert e["mean"] == pytest.approx(v.mean()) and e["ci_hi"] - e["mean"] == pytest.approx(half)
        if e["model"] == "alpha":
            assert e["reference"] and "p" not in e
        elif e["model"] == "alpha_copy":  # same weights: no difference, p = 1, whatever the test
            assert e["diff"] == 0.0 and e["p"] == 1.0 and e["p_holm"] == 1.0 and not e["significant"]
        else:
            assert e["p_holm"] >= e["p"] and e["test"] == ("DeLong" if e["metric"] == "auc" else "paired bootstrap")
    ranks = {(r["metric"], r["model"]): r for r in comp["ranks"]}
    assert ranks[("aca", "alpha")]["mean_rank"] == ranks[("aca", "alpha_copy")]["mean_rank"]  # tied, averaged
    assert sum(r["mean_rank"] for r in comp["ranks"] if r["metric"] == "aca") == pytest.approx(6.0)  # 1+2+3
    csv_lines = (out / "benchmark.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(entries) and csv_lines[0].startswith("experiment,mode,method,shots,metric")


def test_resume_reuses_cells_and_features(models, experiment, tmp_path):
    """An interrupted benchmark computes only the missing cells again, from the cached features; adding a model
    computes only that model's cells."""
    from fundus_vlp.eval.benchmark import run_benchmark

    out = tmp_path / "bench"
    modes = ["zero-shot", "linear-probe"]
    cfg = _cfg(models, experiment, out, ["alpha", "beta"], modes=modes)

    def interrupt(cell):
        raise KeyboardInterrupt  # as a kill right after the first cell was written

    with pytest.raises(KeyboardInterrupt):
        run_benchmark(cfg, on_cell=interrupt)
    assert len(list((out / "cells").glob("*.json"))) == 1
    features = sorted(p.name for p in (out / "features").iterdir())
    again = run_benchmark(cfg)
    assert (again["computed"], again["reused"]) == (3, 1)
    third = next(c for c in again["cells"] if c["model"] == "alpha" and c["mode"] == "linear-probe")
    assert third["feature_cache"] == {**third["feature_cache"], "hits": 1, "misses": 0}  # alpha's features reused
    assert set(features) <= {p.name for p in (out / "features").iterdir()}
    cfg3 = _cfg(models, experiment, out, ["alpha", "beta", "alpha_copy"], modes=modes)
    third_run = run_benchmark(cfg3)
    assert (third_run["computed"], third_run["reused"]) == (2, 4)
    fresh = [c for c in third_run["cells"] if c["model"] == "alpha_copy"]
    assert all(c["feature_cache"]["misses"] == 0 for c in fresh)  # same weights file: alpha's features
    # a changed evaluation setting makes new cells, never stale ones; the features stay valid
    cfg3.eval.linear_probe.c_grid = [10.0]
    changed = run_benchmark(cfg3)
    assert changed["computed"] == 6 and all(c["feature_cache"]["misses"] == 0 for c in changed["cells"])


def test_image_only_model_is_benchmarked_without_text(models, experiment, tmp_path):
    from fundus_vlp.eval.benchmark import run_benchmark

    cfg = _cfg(models, experiment, tmp_path / "bench", ["alpha", "retina_only"])
    cfg.eval.few_shot.methods = ["prototype", "tip_adapter"]
    res = run_benchmark(cfg)
    entries = res["report"]["entries"]
    beta = {(e["mode"], e["method"]): e for e in entries if e["model"] == "retina_only"}
    assert beta[("zero-shot", "zero-shot")]["status"] == "image-only model: skipped"
    assert beta[("few-shot", "tip_adapter")]["status"] == "image-only model: skipped"
    assert beta[("few-shot", "prototype")]["status"] == "ok" and beta[("linear-probe", "linear_probe")]["status"] == "ok"
    assert "image-only model: skipped" in res["report"]["markdown"]
    # ranks only over the settings both models ran
    assert {r["settings"] for r in res["report"]["ranks"]} == {2}


def test_image_only_eval_skips_or_refuses_text_modes(models, experiment, tmp_path):
    from fundus_vlp.eval import EvalCfg, evaluate
    from fundus_vlp.eval.runner import ImageOnlyError
    from fundus_vlp.inference.loading import load_model

    model = load_model(models["retina_only"]).model
    cfg = EvalCfg(output_dir=str(tmp_path / "run"), folds=2, bootstrap=0, plots=False, progress=False,
                  print_table=False)
    cfg.few_shot.shots = [2]
    cfg.linear_probe.c_grid = [1.0]
    with pytest.raises(ImageOnlyError, match="image-only model: zero-shot"):
        evaluate(model, str(experiment), ["zero-shot"], cfg)
    cfg.few_shot.methods = ["tip_adapter_f"]
    with pytest.raises(ImageOnlyError, match="image-only model"):
        evaluate(model, str(experiment), ["few-shot"], cfg)
    cfg.few_shot.methods = ["tip_adapter", "knn"]
    res = evaluate(model, str(experiment), ["zero-shot", "few-shot", "linear-probe"], cfg)
    assert "zero-shot: image-only model: skipped" in res["notes"]
    assert "few-shot tip_adapter: image-only model: skipped" in res["notes"]
    assert {(r["mode"], r["method"]) for r in res["rows"]} == {("few-shot", "knn"), ("linear-probe", "linear_probe")}
