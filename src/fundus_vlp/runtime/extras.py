"""Optional dependencies: ``pip install fundus-vlp`` installs the core (training, evaluation, the Python API);
each optional feature imports its library through :func:`require`, which names the extra that installs it.

Extras (``pyproject.toml``): ``app`` (gradio: the web app), ``elite`` (PyMuPDF: atlas PDFs -> elite pairs),
``onnx`` (onnx, onnxscript, onnxruntime: ONNX export and ``OnnxModel``), ``seg`` (segmentation-models-pytorch:
segmentation evaluation), ``report`` (pycocoevalcap: caption metrics), ``all`` (every one of them).
"""
from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = ("app", "elite", "onnx", "seg", "report")


class MissingExtraError(ImportError, RuntimeError):
    """An optional feature whose library is not installed; the one-line message says how to install it.
    A ``RuntimeError`` too, so the command line reports it like any other error (no traceback)."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """``importlib.import_module(module)``, or a :class:`MissingExtraError` naming ``pip install 'fundus-vlp[extra]'``."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; extras: {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or module.split(".")[0]
        raise MissingExtraError(f"{feature} needs the optional dependency {missing!r}, which is not installed: "
                                f"pip install 'fundus-vlp[{extra}]'", name=missing) from exc
