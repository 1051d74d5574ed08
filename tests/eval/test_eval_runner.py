"""The Python API ``evaluate``: row format, feature reuse, leak-free thresholds, captioning, bug-compat."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fundus_vlp.eval.captioning as captioning
from conftest import TINY_WORLD, write_noise_dataframe
from fundus_vlp.eval import EvalCfg, Experiment, evaluate, format_summary
from fundus_vlp.inference.features import FeatureCache
from fundus_vlp.eval.context import EvalContext
from fundus_vlp.eval.modes import run_linear_probe



@pytest.fixture(scope="module")
def binary_experiment(tmp_path_factory) -> Experiment:
    root = tmp_path_factory.mktemp("bin")
    rows = []
    for i in range(40):
        label = "glaucoma" if i % 4 == 0 else "no glaucoma"  # imbalanced, like REFUGE
        rows.append((f"{i}.png", 90 + (70 if label == "glaucoma" else 0), [label]))
    write_noise_dataframe(root / "b.csv", root, rows, std=25, shape=(40, 40, 3))
    return Experiment(name="toy_refuge", classes=["no glaucoma", "glaucoma"], dataframe=str(root / "b.csv"),
                      image_root=str(root), task="binary", positive="glaucoma")


def small_cfg(tmp_path, **kw) -> EvalCfg:
    cfg = EvalCfg(output_dir=str(tmp_path / "run"), folds=2, bootstrap=50, progress=False, print_table=False,
                  demo=dict(TINY_WORLD), demo_cache_dir=str(tmp_path / "world"), **kw)
    cfg.few_shot.shots = [1, 2]
    cfg.few_shot.optim.min_steps = 5
    cfg.few_shot.optim.epochs = 2
    cfg.linear_probe.c_grid = [0.1, 10.0]
    return cfg


@pytest.fixture
def model():
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    return create_model("tiny")


def test_rows_and_feature_reuse(model, binary_experiment, tmp_path):
    cfg = small_cfg(tmp_path, cache_dir=str(tmp_path / "cache"))
    res = evaluate(model, binary_experiment, ["zero-shot", "few-shot", "linear-probe"], cfg, model_name="toy-model")
    assert res["feature_cache"]["misses"] == 1  # one extraction for every mode, shot and fold
    rows = res["rows"]
    zs = [r for r in rows if r["mode"] == "zero-shot"]
    assert [r["split"] for r in zs] == ["all", "fold-test"] and zs[0]["folds"] == 1 and zs[0]["n_test"] == 40
    few = [r for r in rows if r["mode"] == "few-shot"]
    assert {(r["method"], r["shots"]) for r in few} == {(m, k) for m in ("clip_adapter", "tip_adapter",
                                                                             "tip_adapter_f", "linear_probe")
                                                           for k in (1, 2)}
    for r in rows:
        assert r["model"] == "toy-model" and r["experiment"] == "toy_refuge"
        assert {"acc", "aca", "auc", "f1_pos", "sensitivity", "specificity"} <= set(r["metrics"])
        assert "kappa" not in r["metrics"]  # not a graded task
    # few-shot / linear-probe thresholds come from validation, one per fold
    lp = next(r for r in rows if r["mode"] == "linear-probe")
    assert len(lp["thresholds"]) == 2 and lp["hparams"][0]["C"] in (0.1, 10.0)
    summary = format_summary(rows, "aca")
    for col in ("ZS", "ZS(splits)", "CLIP-Ad@1", "Tip@2", "Tip-F@2", "LP@2", "LP(full)"):
        assert col in summary.splitlines()[1]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["rows"][0]["metrics"]["aca"] == pytest.approx(rows[0]["metrics"]["aca"])
    # a second evaluation with the same cache: no extraction, same numbers (clean, deterministic features)
    res2 = evaluate(model, binary_experiment, ["few-shot"], small_cfg(tmp_path, cache_dir=str(tmp_path / "cache")))
    assert res2["feature_cache"] == {**res2["feature_cache"], "hits": 1, "misses": 0}
    few2 = [r for r in res2["rows"] if r["mode"] == "few-shot"]
    for a, b in zip(few, few2):
        assert a["per_fold"] == b["per_fold"]


def test_threshold_and_probe_ignore_test_labels(model, binary_experiment, tmp_path, monkeypatch):
    """Keep the splits fixed, flip every test label: C, thresholds and test probabilities must not move."""
    cfg = small_cfg(tmp_path)
    cfg.folds = 1
    ctx = EvalContext(model, "m", "fp", binary_experiment, cfg, tmp_path, FeatureCache(None), torch.device("cpu"))
    splits = ctx.splits(cfg.linear_probe.train_fraction, cfg.linear_probe.val_fraction)
    monkeypatch.setattr(ctx, "splits", lambda *a, **k: splits)
    clean = run_linear_probe(ctx)[0]
    clean_probs = ctx.predictions["linear-probe/linear_probe/fold-test"]["probs"].copy()
    ctx.data.labels[splits[0].test] = 1 - ctx.data.labels[splits[0].test]
    corrupted = run_linear_probe(ctx)[0]
    assert clean["hparams"] == corrupted["hparams"]
    assert clean["thresholds"] == corrupted["thresholds"]
    np.testing.assert_array_equal(ctx.predictions["linear-probe/linear_probe/fold-test"]["probs"], clean_probs)
    assert clean["metrics"]["acc"] != corrupted["metrics"]["acc"]  # only the metrics read test labels


def test_unnormalised_prototypes_switch(model, binary_experiment, tmp_path):
    """Fixed: softmax(s·x·p̂) with unit prototypes p̂; bug_compat: softmax(s·x·p) with the raw ensemble mean p,
    whose norm < 1 shrinks that class's logits. Both are checked against the formula, and they differ."""
    import torch.nn.functional as F

    from fundus_vlp.inference.features import model_fingerprint
    from fundus_vlp.eval.modes.zero_shot import zero_shot_probs_all
    from fundus_vlp.inference.embedding import encode_texts
    from fundus_vlp.inference.zero_shot import class_prompts, load_knowledge

    def probs(switch: bool):
        cfg = small_cfg(tmp_path)
        cfg.bug_compat.unnormalised_prototypes = switch
        ctx = EvalContext(model, "m", model_fingerprint(model), binary_experiment, cfg, tmp_path, FeatureCache(None),
                          torch.device("cpu"))
        return ctx.features(), zero_shot_probs_all(ctx)

    X, fixed = probs(False)
    _, compat = probs(True)
    kb = load_knowledge(EvalCfg().zero_shot.knowledge)
    raw = torch.stack([encode_texts(model, class_prompts(c, EvalCfg().zero_shot.templates, kb)).mean(0)
                       for c in binary_experiment.classes])
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2), atol=1e-3)  # ensembles: the switch matters here
    scale = float(model.scale().detach())
    np.testing.assert_allclose(fixed, (scale * X @ F.normalize(raw, dim=1).T).softmax(-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(compat, (scale * X @ raw.T).softmax(-1).numpy(), atol=1e-5)
    assert np.abs(fixed - compat).max() > 1e-4  # well above the 1e-5 tolerance of the formula checks
    cfg = small_cfg(tmp_path)
    cfg.bug_compat.unnormalised_prototypes = True
    evaluate(model, binary_experiment, ["zero-shot"], cfg)
    assert "unnormalised_prototypes: true" in (tmp_path / "run" / "config.yaml").read_text()


def test_demo_experiment_and_captioning(tmp_path, monkeypatch):
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    model = create_model("tiny", **{"decoder.enabled": True})
    monkeypatch.setattr(captioning, "java_available", lambda: False)  # fast path; Java is tested separately
    cfg = small_cfg(tmp_path)
    cfg.retrieval.max_length = 8
    res = evaluate(model, "demo:demo_dr_grading", ["zero-shot", "retrieval"], cfg)
    methods = {r["method"]: r for r in res["rows"]}
    assert "kappa" in methods["zero-shot"]["metrics"]  # the DR grading experiment is graded
    cap = methods["captioning"]
    assert {"bleu_1", "bleu_4", "rouge_l", "cider"} <= set(cap["metrics"])
    assert cap["details"]["meteor"] is None and "Java" in " ".join(res["notes"])
    assert methods["recall@k"]["metrics"]["n_images"] == 12


def test_model_folder_and_default_run_dir(model, binary_experiment, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    cfg = small_cfg(tmp_path)
    cfg.output_dir = None
    res = evaluate(tmp_path / "m", binary_experiment, ["zero-shot"], cfg)
    assert res["model"] == "m" and res["model_fingerprint"].startswith("file-")
    assert res["run_dir"].startswith("runs/eval/toy_refuge-zero-shot-")


def test_multilabel_zero_shot(model, binary_experiment, tmp_path):
    root = binary_experiment.image_root
    lines = [",image,atributes,categories"]
    for i in range(12):
        cats = ["glaucoma", "drusen"] if i % 3 == 0 else (["drusen"] if i % 3 == 1 else ["normal"])
        lines.append(f"{i},{i}.png,[],\"{cats!r}\"")
    (tmp_path / "ml.csv").write_text("\n".join(lines) + "\n")
    exp = Experiment(name="ml", classes=["glaucoma", "drusen"], dataframe=str(tmp_path / "ml.csv"), image_root=root,
                     task="multilabel")
    res = evaluate(model, exp, ["zero-shot"], small_cfg(tmp_path))
    row = res["rows"][0]
    assert set(row["metrics"]) == {"acc", "f1_macro", "auc", "aupr"} and row["n_test"] == 12
    with pytest.raises(ValueError, match="multi-label"):
        evaluate(model, exp, ["linear-probe"], small_cfg(tmp_path))


def test_every_configurable_mode_has_a_runner():
    from fundus_vlp.eval.config import MODES
    from fundus_vlp.eval.modes import RUNNERS

    assert set(RUNNERS) == set(MODES)
