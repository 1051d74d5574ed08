"""The feature cache: image embeddings extracted once per model and image set and kept on disk (safetensors,
no pickle). Evaluation, ``fundus_vlp.search`` and the benchmark read features through ``FeatureCache.get``.

Features always come from the **evaluation** transform (``extract_features``): the official Tip-Adapter
applies random pre-training augmentation to test images, which we do not. The cache key covers
the model weights, the image list (paths, sizes, modification times), the preprocessing config and the projection
flag, so a changed input never returns stale features.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from ..constants import ENV_CACHE
from ..runtime.files import write_bytes_atomic
from .embedding import extract_features

_logger = logging.getLogger(__name__)

FEATURE_FORMAT = 2  # 2: JPEGs decoded at reduced size (load_image draft_size), features differ slightly


def file_fingerprint(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_fingerprint(model, weights_file: Optional[str | Path] = None) -> str:
    """Hash of the weights file when given, else of the in-memory state dict (names, dtypes, bytes)."""
    if weights_file is not None:
        return "file-" + file_fingerprint(weights_file)
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "state-" + h.hexdigest()


def images_fingerprint(paths: Sequence[Path]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class FeatureCache:
    """``<directory>/<tag>-<key>.safetensors`` files; ``hits``/``misses`` count lookups of this instance."""

    def __init__(self, directory: Optional[str | Path]):
        self.directory = Path(directory) if directory else None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def default_dir(output_dir: Optional[str | Path] = None) -> Path:
        """``$FUNDUS_VLP_CACHE/features`` when set, else ``<output_dir>/.feature_cache``."""
        env = os.environ.get(ENV_CACHE)
        if env:
            return Path(env) / "features"
        return Path(output_dir or ".") / ".feature_cache"

    def key(self, **parts) -> str:
        blob = json.dumps({"format": FEATURE_FORMAT, **parts}, sort_keys=True, default=str)
        return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()

    def _path(self, tag: str, key: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tag)[:80]
        return self.directory / f"{safe}-{key}.safetensors"

    def load(self, tag: str, key: str) -> Optional[torch.Tensor]:
        if self.directory is None:
            return None
        path = self._path(tag, key)
        if not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            return load_file(str(path))["features"]
        except Exception as exc:  # a truncated cache file is re-extracted, never trusted
            _logger.warning("ignoring unreadable feature cache %s (%s)", path, exc)
            return None

    def save(self, tag: str, key: str, features: torch.Tensor, meta: Dict[str, str]) -> None:
        if self.directory is None:
            return
        from safetensors.torch import save

        self.directory.mkdir(parents=True, exist_ok=True)
        data = save({"features": features.contiguous()}, metadata={k: str(v) for k, v in meta.items()})
        write_bytes_atomic(self._path(tag, key), data)

    def get(self, model, paths: Sequence[Path], where: Optional[Sequence[str]] = None, *, tag: str,
            fingerprint: str, project: bool = True, batch_size: int = 32, device: str = "cpu",
            num_workers: int = 0, progress: bool = True) -> torch.Tensor:
        """Features of ``paths`` from the cache, or extracted (with a progress bar) and stored."""
        key = self.key(model=fingerprint, images=images_fingerprint(paths), n=len(paths),
                       preprocess=asdict(model.cfg.preprocess), project=project, tag=tag)
        cached = self.load(tag, key)
        if cached is not None and cached.shape[0] == len(paths):
            self.hits += 1
            _logger.info("features for %s: cache hit (%s)", tag, self._path(tag, key))
            return cached
        self.misses += 1
        feats = extract_features(model, paths, where, project=project, batch_size=batch_size, device=device,
                                 num_workers=num_workers, progress=progress, desc=f"features {tag}")
        self.save(tag, key, feats, {"tag": tag, "model": fingerprint, "n": len(paths), "project": project})
        return feats
