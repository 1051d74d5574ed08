"""Run directories: the resolved config, git commit and package versions of every run (traceable results)."""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List

from ..runtime import distributed as dist

_logger = logging.getLogger(__name__)
_PACKAGES = ("torch", "torchvision", "timm", "transformers", "tokenizers", "safetensors", "numpy", "scikit-learn",
             "omegaconf", "pillow", "fundus-vlp")


def environment_info() -> Dict[str, Any]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5,
                                    cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    import torch

    return {"git_commit": commit, "git_dirty": dirty, "packages": versions, "python": sys.version.split()[0],
            "platform": platform.platform(), "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "command": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def resolve_run_dir(output_dir: str, run_name: str, prefix: str, resume: str) -> Path:
    if resume and resume != "latest" and not run_name:
        return Path(resume).resolve().parent.parent  # <run>/checkpoints/step_N.pt
    if resume == "latest" and not run_name:
        raise ValueError("--resume latest needs run_name=<the run to continue> (or a checkpoint path)")
    name = run_name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(output_dir) / name


# fields that say how this invocation continues a run, not what the run is
_RESUME_FIELDS = ("resume", "allow_config_change")


def _flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def config_differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """``key: old -> new`` lines for every leaf that differs (lists compare whole)."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in _RESUME_FIELDS:
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return lines


def _next_config_version(run_dir: Path) -> Path:
    n = 1
    while (run_dir / f"config.{n}.yaml").exists():
        n += 1
    return run_dir / f"config.{n}.yaml"


def _check_resumed_config(cfg, run_dir: Path) -> str:
    """On resume: compare with the run's config.yaml. Returns an error message, or "" (and, when a change
    is allowed, moves the old config to ``config.<n>.yaml`` so every version of the run is kept)."""
    from omegaconf import OmegaConf

    path = run_dir / "config.yaml"
    if not getattr(cfg, "resume", "") or not path.is_file():
        return ""
    old = OmegaConf.to_container(OmegaConf.load(path))
    new = OmegaConf.to_container(OmegaConf.structured(cfg))
    diff = config_differences(old, new)
    if not diff:
        return ""
    listing = "\n  ".join(diff)
    if not getattr(cfg, "allow_config_change", False):
        return (f"{path}: the config differs from the run being resumed:\n  {listing}\n"
                f"resume with the same config, or pass --allow-config-change (the old config is kept as config.N.yaml)")
    kept = _next_config_version(run_dir)
    os.replace(path, kept)
    _logger.warning("resuming with a changed config (old one kept as %s):\n  %s", kept.name, listing)
    return ""


def prepare_run_dir(cfg, env: dist.DistEnv, prefix: str | None = None) -> Path:
    """Create (rank 0) and agree on (all ranks) the run directory; write config.yaml and env.json.

    On resume a config that differs from the run's ``config.yaml`` is refused (all ranks raise) unless
    ``cfg.allow_config_change``; then the previous one is kept as ``config.<n>.yaml``."""
    from ..config.loading import save_resolved

    run_dir = resolve_run_dir(cfg.output_dir, cfg.run_name, prefix or cfg.method, getattr(cfg, "resume", ""))
    run_dir = Path(dist.broadcast_object(str(run_dir)))
    error = _check_resumed_config(cfg, run_dir) if env.is_main else ""
    error = dist.broadcast_object(error)
    if error:
        raise ValueError(error)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, run_dir / "config.yaml")
        (run_dir / "env.json").write_text(json.dumps({**environment_info(), "world_size": env.world_size}, indent=2))
    dist.barrier()
    return run_dir
