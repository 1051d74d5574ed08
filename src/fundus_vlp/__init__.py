"""fundus-vlp: fundus vision-language pretraining (KeepFIT V2, KeepFIT, FLAIR, ViLReF, CLIP).

The public API is loaded lazily, so ``fundus-vlp --help`` does not import torch, timm and transformers::

    import fundus_vlp
    model, preprocess_train, preprocess_val = fundus_vlp.create_model_and_transforms("rn50-bioclinicalbert")
    tokenizer = fundus_vlp.get_tokenizer("rn50-bioclinicalbert")
"""
from __future__ import annotations

import importlib

from .version import __version__

_LAZY = {
    "create_model": "factory", "create_model_and_transforms": "factory", "create_model_from_pretrained": "factory",
    "get_tokenizer": "factory", "list_models": "config.registry",
    "get_model_config": "config.registry", "add_model_config": "config.registry", "from_pretrained": "factory", "save_pretrained": "hub", "FundusCLIP": "models.clip",
    "ModelCfg": "config", "evaluate": "eval", "search": "inference.image_search", "OnnxModel": "models.onnx",
    "predict": "inference.pipeline", "calibrate": "inference.pipeline", "Calibration": "inference.calibration",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fundus_vlp' has no attribute {name!r}")
