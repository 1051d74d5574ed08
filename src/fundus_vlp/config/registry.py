"""Architecture registry: a scan of ``configs/models/*.json`` (open_clip style), extendable at run time."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from .schema import from_dict
from .model import ModelCfg

_CONFIG_DIR = Path(__file__).parents[1] / "configs" / "models"
_MODEL_CONFIGS: Dict[str, Dict[str, Any]] = {}


def _read_config(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    return {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys document the file


def _rescan() -> None:
    for path in sorted(_CONFIG_DIR.glob("*.json")):
        _MODEL_CONFIGS[path.stem] = _read_config(path)


def add_model_config(path: str | Path) -> str:
    """Register an extra architecture JSON; its file stem becomes the model name."""
    path = Path(path)
    _MODEL_CONFIGS[path.stem] = _read_config(path)
    return path.stem


def list_models() -> List[str]:
    if not _MODEL_CONFIGS:
        _rescan()
    return sorted(_MODEL_CONFIGS)


def get_model_config(name: str, overrides: Dict[str, Any] | None = None) -> ModelCfg:
    """The registered config for `name`, with `overrides` (nested or dotted keys) merged on top; typos, wrong
    types and implausible sizes are a ``ConfigError`` naming the key."""
    if not _MODEL_CONFIGS:
        _rescan()
    if name not in _MODEL_CONFIGS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return from_dict(ModelCfg, _MODEL_CONFIGS[name], overrides or {}, {"name": name}, where=f"model {name!r}")
