"""Pretraining methods, selected with ``method=NAME``; each composes shared losses and model parts."""
from __future__ import annotations

from .base import Method
from .clip import CLIPMethod
from .flair import FLAIRMethod
from .keepfit import KeepFITMethod
from .keepfit_v2 import KeepFITV2Method
from .vilref import ViLReFMethod

METHOD_CLASSES = {m.name: m for m in (CLIPMethod, FLAIRMethod, KeepFITMethod, ViLReFMethod, KeepFITV2Method)}


def method_class(name: str) -> type:
    if name not in METHOD_CLASSES:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(METHOD_CLASSES)}")
    return METHOD_CLASSES[name]


def build_method(cfg, model, vocab=None) -> Method:
    return method_class(cfg.method).build(model, cfg, vocab)


__all__ = ["Method", "METHOD_CLASSES", "build_method", "method_class", "CLIPMethod", "FLAIRMethod",
           "KeepFITMethod", "ViLReFMethod", "KeepFITV2Method"]
