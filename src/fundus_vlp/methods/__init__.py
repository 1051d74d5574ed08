"""Pretraining methods, selected with ``method=NAME``; each composes shared losses and model parts.

Importing this package registers the built-in methods; ``register_method`` adds more.
"""
from __future__ import annotations

from .base import Method, get_method, method_names, method_options_classes, register_method
from .clip import CLIPMethod
from .flair import FLAIRMethod
from .keepfit import KeepFITMethod
from .keepfit_v2 import KeepFITV2Method
from .mlm import MLMMethod
from .vilref import ViLReFMethod


def build_method(name: str, model, options=None, bug_compat=None, vocab=None) -> Method:
    """The registered method `name` for `model`, given its options section and the bug-compat switches."""
    return get_method(name).build(model, options, bug_compat, vocab)


__all__ = ["Method", "build_method", "get_method", "method_names", "method_options_classes", "register_method", "CLIPMethod", "FLAIRMethod",
           "KeepFITMethod", "ViLReFMethod", "KeepFITV2Method",
           "MLMMethod"]
