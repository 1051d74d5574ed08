"""One method registry: the `method` field is validated against it and a new method plugs in by decorator."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from fundus_vlp.config.loading import ConfigError, build_config
from fundus_vlp.data.config import DataNeeds
from fundus_vlp.methods import get_method, method_names
from fundus_vlp.methods.base import _METHODS, Method, register_method
from fundus_vlp.methods.flair import FLAIRMethod
from fundus_vlp.train.config import PretrainCfg


def test_builtin_methods_and_their_needs():
    assert set(method_names()) == {"clip", "flair", "keepfit", "keepfit_v2", "vilref", "text_pretrain"}
    cfg = build_config(PretrainCfg, [], ["method=clip"], has_model=True)
    assert get_method("clip").data_needs(cfg.method_options) == DataNeeds(augment_description=False)
    cfg.clip.use_elite = True
    assert get_method("clip").data_needs(cfg.method_options).pool_elite
    assert get_method("keepfit").data_needs().elite and get_method("vilref").data_needs().multi_hot
    assert PretrainCfg(method="keepfit_v2").model.decoder.enabled  # the method asks for the decoder
    assert not PretrainCfg(method="flair").model.decoder.enabled


def test_unknown_method_is_a_config_error_listing_the_registry():
    with pytest.raises(ConfigError, match="method must be one of .*keepfit_v2"):
        build_config(PretrainCfg, [], ["method=keepfit3"], has_model=True)
    with pytest.raises(KeyError, match="available: .*vilref"):
        get_method("keepfit3")


def test_registered_method_is_selectable():
    @register_method
    class MyMethod(FLAIRMethod):
        name = "my_flair"

    try:
        assert PretrainCfg(method="my_flair").method == "my_flair" and get_method("my_flair") is MyMethod
        with pytest.raises(ValueError, match="already registered"):
            register_method(type("Other", (Method,), {"name": "my_flair"}))
    finally:
        _METHODS.pop("my_flair")


@dataclass
class ScaledOptions:
    """Options of a method defined outside the package."""

    weight: float = 1.0
    note: str = "none"


def test_method_with_options_registered_outside_trains_through_the_cli(image_dataset, tiny_overrides, tmp_path,
                                                                        capsys):
    """`method=NAME NAME.key=value` reaches the method typed; a typo or a wrong type in its key is a config error."""
    import yaml

    from conftest import pretrain_overrides
    from fundus_vlp.cli.main import main

    seen = []

    @register_method
    class ScaledFLAIR(FLAIRMethod):
        name = "scaled_flair"
        options_class = ScaledOptions

        def __init__(self, model, options=None, bug_compat=None):
            super().__init__(model, options, bug_compat)
            seen.append((self.options, self.bug_compat))

        def compute_losses(self, feats, batch):
            losses = super().compute_losses(feats, batch)
            return {**losses, "loss": self.options.weight * losses["loss"]}

    try:
        ov = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "scaled_flair", run_name="ext",
                                **{"train.max_steps": 1, "scaled_flair.weight": "0", "scaled_flair.note": 7,
                                   "bug_compat.empty_category_as_class": "true"})
        assert main(["pretrain", *ov]) == 0, capsys.readouterr().err
        options, bug_compat = seen[-1]
        assert options == ScaledOptions(weight=0.0, note="7") and isinstance(options.weight, float)
        assert bug_compat.empty_category_as_class
        saved = yaml.safe_load((tmp_path / "ext" / "config.yaml").read_text())
        assert saved["scaled_flair"] == {"weight": 0.0, "note": "7"} and "keepfit" in saved
        rows = [json.loads(line) for line in (tmp_path / "ext" / "metrics.jsonl").read_text().splitlines()]
        assert [r["loss"] for r in rows if r.get("kind") == "train"] == [0.0]  # the weight reached the loss

        for bad, words in (("scaled_flair.wieght=2", "scaled_flair.wieght"),
                           ("scaled_flair.weight=heavy", "scaled_flair.weight")):
            capsys.readouterr()
            assert main(["pretrain", "--dry-run", *ov, bad]) == 2
            err = capsys.readouterr().err
            assert "config error" in err and words in err, err
    finally:
        _METHODS.pop("scaled_flair")
    with pytest.raises(ConfigError, match="scaled_flair"):  # gone from the registry, gone from the schema
        build_config(PretrainCfg, [], ["scaled_flair.weight=2"], has_model=True)
