"""One method registry: the `method` field is validated against it and a new method plugs in by decorator."""
from __future__ import annotations

import pytest

from fundus_vlp.config.loading import ConfigError, build_config
from fundus_vlp.data.config import DataNeeds
from fundus_vlp.methods import get_method, method_names
from fundus_vlp.methods.base import _METHODS, Method, register_method
from fundus_vlp.methods.flair import FLAIRMethod
from fundus_vlp.train.config import PretrainCfg


def test_builtin_methods_and_their_needs():
    assert set(method_names()) == {"clip", "flair", "keepfit", "keepfit_v2", "vilref"}
    cfg = PretrainCfg(method="clip")
    assert get_method("clip").data_needs(cfg) == DataNeeds(augment_description=False)
    cfg.clip.use_elite = True
    assert get_method("clip").data_needs(cfg).pool_elite
    assert get_method("keepfit").data_needs(cfg).elite and get_method("vilref").data_needs(cfg).multi_hot
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
