"""Run directories: the resolved config, git commit and package versions of every run (traceable results)."""
from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict

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


def prepare_run_dir(cfg, env: dist.DistEnv, prefix: str | None = None) -> Path:
    """Create (rank 0) and agree on (all ranks) the run directory; write config.yaml and env.json."""
    from ..config.loading import save_resolved

    run_dir = resolve_run_dir(cfg.output_dir, cfg.run_name, prefix or cfg.method, getattr(cfg, "resume", ""))
    run_dir = Path(dist.broadcast_object(str(run_dir)))
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, run_dir / "config.yaml")
        (run_dir / "env.json").write_text(json.dumps({**environment_info(), "world_size": env.world_size}, indent=2))
    dist.barrier()
    return run_dir
