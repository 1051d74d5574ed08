"""Training checkpoints: atomic writes, ``weights_only`` loads, and a clear error for corrupt files.

A checkpoint holds everything needed to continue as if never stopped: the training task (model +
method modules + ViLReF queues and momentum weights), optimizer, scaler, scheduler, the sampler
position (epoch, batch), RNG states and counters. Files are written to a temp file and renamed
(``runtime.files.atomic_write``), so a kill or a full disk during a save leaves the previous good checkpoint in
place; a full disk is refused before writing when the free space is known to be short.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..hub import CheckpointError, load_torch_file
from ..runtime.files import atomic_write, is_temp_name

_logger = logging.getLogger(__name__)
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")
LATEST = "latest.pt"


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in a nested state (what ``torch.save`` will write, give or take a few KiB)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def atomic_torch_save(obj: Dict[str, Any], path: Path) -> None:
    with atomic_write(path, "wb", needed=tensor_bytes(obj)) as f:
        torch.save(obj, f)


def _strip_prefixes(state: Dict[str, Any]) -> Dict[str, Any]:
    """Accept state dicts saved from DDP- or compile-wrapped modules (open_clip ``load_state_dict``)."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_checkpoint(path: str | Path) -> Dict[str, Any]:
    """Load with ``weights_only=True`` (never unpickle arbitrary objects); raise CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    ckpt = load_torch_file(path)  # weights_only; unsafe pickles and truncated files raise CheckpointError
    if not isinstance(ckpt, dict) or "task" not in ckpt or "step" not in ckpt:
        raise CheckpointError(f"{path}: not a fundus-vlp training checkpoint (missing 'task'/'step')")
    ckpt["task"] = _strip_prefixes(ckpt["task"])
    return ckpt


def _file_step(path: Path) -> int:
    return int(_STEP_RE.match(path.name).group(1))


class CheckpointManager:
    """``checkpoints/step_<N>.pt`` plus ``latest.pt`` (a copy of the newest), keeping the last `keep` step files."""

    def __init__(self, directory: Path, keep: int = 2, enabled: bool = True):
        self.dir = Path(directory)
        self.keep = max(1, keep)
        self.enabled = enabled
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._remove_partial_files()

    def _remove_partial_files(self) -> None:
        """Temp files of a save that was killed (the run folder is locked by this process: nobody else writes)."""
        for path in self.dir.iterdir():
            if is_temp_name(path) or path.name.endswith(".pt.tmp"):  # older versions: <name>.pt.tmp
                _logger.warning("removing %s, left by a save that did not finish (%d bytes)", path,
                                path.stat().st_size)
                path.unlink(missing_ok=True)

    def step_files(self) -> List[Path]:
        """``step_<N>.pt`` files, oldest first."""
        return sorted((p for p in self.dir.glob("step_*.pt") if _STEP_RE.match(p.name)), key=_file_step)

    def save(self, state: Dict[str, Any], step: int) -> Optional[Path]:
        if not self.enabled:
            return None
        path = self.dir / f"step_{step}.pt"
        atomic_torch_save(state, path)
        # latest.pt is written the same atomic way; if the process dies between the two writes,
        # resolve_resume still finds the newer step file.
        atomic_torch_save(state, self.dir / LATEST)
        for old in self.step_files()[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def resolve_resume(self, spec: str) -> Optional[Path]:
        """`latest` -> the newest loadable checkpoint (falling back past corrupt ones with a warning)."""
        if not spec:
            return None
        if spec != "latest":
            return Path(spec)
        latest = self.dir / LATEST
        ordered = ([latest] if latest.exists() else []) + self.step_files()[::-1]
        best: Optional[Path] = None
        best_step = -1
        for path in ordered:
            if path != latest and _file_step(path) <= best_step:
                break  # step files are newest first and named by their step: none further can be newer
            try:
                step = int(load_checkpoint(path)["step"])
            except CheckpointError as exc:
                _logger.warning("skipping unusable checkpoint: %s", exc)
                continue
            if step > best_step:
                best, best_step = path, step
        if best is None and ordered:
            raise CheckpointError(f"{self.dir}: no loadable checkpoint among {[p.name for p in ordered]}")
        return best
