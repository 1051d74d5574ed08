"""The one way to load a model folder for inference: ``load_model(path_or_model) -> LoadedModel``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..constants import WEIGHTS_NAME
from ..hub import resolve_model_dir


@dataclass
class LoadedModel:
    """The model, its weights file (None for an in-memory model) and the name results call it by."""

    model: Any
    weights: Optional[Path]
    name: str

    def __iter__(self):  # model, weights, name = load_model(...)
        return iter((self.model, self.weights, self.name))


def load_model(model_or_dir, device=None) -> LoadedModel:
    """A saved model folder (or a pretraining run folder: its exported ``model/``), or a model object as given;
    in evaluation mode, moved to ``device`` when one is given."""
    from ..factory import from_pretrained
    from .embedding import place

    if isinstance(model_or_dir, (str, Path)):
        directory = resolve_model_dir(model_or_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"model folder not found: {directory}")
        # runs/<run>/model -> "<run>": the exported folder of a pretraining run is always called "model"
        name = directory.resolve().parent.name if directory.name == "model" else directory.name
        loaded = LoadedModel(from_pretrained(directory), directory / WEIGHTS_NAME, name)
    else:
        loaded = LoadedModel(model_or_dir, None, getattr(model_or_dir, "name", None) or model_or_dir.cfg.name)
    if device is not None:
        place(loaded.model, device)
    loaded.model.eval()
    return loaded
