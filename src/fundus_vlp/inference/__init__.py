"""Inference: the one path from a model folder and images of any kind to probabilities, calibrated answers
and patient-level answers. ``model.classify``, ``OnnxModel.classify``, ``fundus-vlp predict``, the web app,
``fundus_vlp.search``, ``fundus-vlp index``, ``build-elite --model`` and ``eval zero-shot`` all go through it.

* ``inputs``: decoding paths, folders, PIL images, arrays and tensors for the model's transform;
* ``embedding``: image and text embeddings (one encoding loop); ``features``: the on-disk feature cache;
* ``zero_shot``: prompt ensembles, the ``ZeroShotHead`` and ``to_probabilities``;
* ``calibration``: Platt / isotonic / temperature calibration measured on held-out images, saved as JSON;
* ``patients``: eye and patient answers; ``pipeline``: ``predict``, ``classify``, ``calibrate``;
* ``loading``: ``load_model``; ``image_search``: ``search``, text -> image search over a folder.

Names are loaded lazily, so ``from fundus_vlp.inference import predict`` does not import what it does not use.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "predict": "pipeline", "classify": "pipeline", "calibrate": "pipeline", "Prediction": "pipeline",
    "Calibration": "calibration", "fit_calibration": "calibration", "reliability_diagram": "calibration",
    "embed_images": "embedding", "embed_texts": "embedding", "extract_features": "embedding",
    "FeatureCache": "features", "build_head": "zero_shot", "to_probabilities": "zero_shot",
    "ZeroShotHead": "zero_shot", "load_model": "loading", "search": "image_search", "read_patient_csv": "patients",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fundus_vlp.inference' has no attribute {name!r}")
