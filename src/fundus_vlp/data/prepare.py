"""Dataset preparation: pre-resize every image once into a cache that training reads (as KeepFIT's pre-resized root).

FLAIR decodes full-resolution originals at every step; KeepFIT keeps a pre-resized
root by hand. ``prepare`` does it once, in parallel and resumably: each image becomes an 8-bit PNG,
pad-to-square at ``size`` (optionally FOV-cropped first), at the same relative path (suffix ``.png``).
``fundus_vlp_cache.json`` maps original relative paths to cached files, so the same dataframes work
unchanged with ``root=<cache>``. Bad images are skipped and reported by dataframe row.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..runtime.device import usable_cores
from ..runtime.files import DiskFullError, atomic_write, write_text_atomic
from .dataframes import DataFormatError, read_any, resolve_image_path, where
from .images import BadImageError, load_image
from .transforms import fov_crop, resize_pad_to_square

MANIFEST = "fundus_vlp_cache.json"


@dataclass
class PrepareReport:
    out: Path
    total: int = 0
    written: int = 0
    reused: int = 0
    bad: List[Dict[str, str]] = field(default_factory=list)


def cached_name(relative: str) -> str:
    rel = PurePosixPath(relative.replace("\\", "/"))
    return str(rel.with_suffix(".png")) if rel.suffix else str(rel) + ".png"


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _process(job: Tuple[str, str, str, str, int, bool]) -> Tuple[str, Optional[str]]:
    """Worker: decode, crop, pad-resize, write atomically. Returns (relative, error or None)."""
    src, dst, rel, loc, size, crop = job
    try:
        img = load_image(src, loc, draft_size=None if crop else 2 * size)  # see FundusTransform.draft_size
        if crop:
            img = fov_crop(img)
        img = resize_pad_to_square(img, size)
        arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dst) as f:
            Image.fromarray(arr).save(f, format="PNG", compress_level=1)  # a speed cache: fast over small
        return rel, None
    except BadImageError as exc:
        return rel, exc.reason
    except DiskFullError:
        raise  # not a property of this image: stop the whole run
    except Exception as exc:  # an unexpected decoder failure must not kill the whole pool
        return rel, f"{type(exc).__name__}: {exc}"


# Below this many images per worker, starting the workers (a fresh interpreter importing torch, ~3 s each)
# costs more than they save: the images are prepared in this process (~20 ms each at 128-512 px).
_IMAGES_PER_WORKER_START = 150


@contextlib.contextmanager
def _results(jobs: List[tuple], workers: int) -> Iterator[Iterator[Tuple[str, Optional[str]]]]:
    """(relative, error) per job, in order: in this process for small jobs, else from ``workers`` processes."""
    workers = max(1, min(workers, len(jobs) // _IMAGES_PER_WORKER_START))
    if workers == 1:
        yield map(_process, jobs)
        return
    # spawn, not fork: forking a process whose OpenMP thread pool is already running (any torch op
    # ran before) can deadlock the children; workers resize single-threaded
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker) as pool:
        yield pool.map(_process, jobs, chunksize=8)


def _collect(root: Path, dataframes: Sequence[str | Path]) -> Dict[str, Tuple[str, str]]:
    """relative path -> (absolute source path, first 'file, row' that references it)."""
    images: Dict[str, Tuple[str, str]] = {}
    for df in dataframes:
        _, frame = read_any(df)
        for rel, source, row in zip(frame["image"], frame["source"], frame["row"]):
            if rel not in images:
                images[rel] = (str(resolve_image_path(root, rel, source, row)), where(source, row))
    return images


def load_manifest(cache: Path) -> Dict:
    path = Path(cache) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: corrupt cache manifest ({exc}); re-run `fundus-vlp prepare`") from exc


def prepare_dataset(root: str | Path, dataframes: Sequence[str | Path], out: str | Path, size: int = 512,
                    crop: bool = False, workers: Optional[int] = None, progress: bool = True) -> PrepareReport:
    """Build or complete the cache; ``workers`` processes (default: one per usable core)."""
    from tqdm import tqdm

    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out)
    if manifest and (manifest.get("size") != size or manifest.get("fov_crop") != crop):
        raise DataFormatError(f"{out}: cache was prepared with size={manifest.get('size')}, "
                              f"fov_crop={manifest.get('fov_crop')}; use another --out for size={size}, fov_crop={crop}")
    entries: Dict[str, str] = dict(manifest.get("entries", {}))
    images = _collect(root, dataframes)
    report = PrepareReport(out=out, total=len(images))
    jobs = []
    for rel, (src, loc) in images.items():
        dst = out / cached_name(rel)
        if entries.get(rel) == cached_name(rel) and dst.is_file():
            report.reused += 1  # resumable: done in an earlier (possibly killed) run
            continue
        jobs.append((src, str(dst), rel, loc, size, crop))
    bad: Dict[str, str] = {}
    workers = workers if workers is not None else usable_cores()
    try:
        with _results(jobs, workers) as done:
            for i, (rel, error) in enumerate(tqdm(done, total=len(jobs), desc="preparing", disable=not progress)):
                if error is None:
                    entries[rel] = cached_name(rel)
                    report.written += 1
                else:
                    bad[rel] = error
                if i % 500 == 499:
                    _write_manifest(out, size, crop, entries, bad, images)
    except DiskFullError:
        with contextlib.suppress(OSError):  # keep what was done, so the next run continues from there
            _write_manifest(out, size, crop, entries, bad, images)
        raise
    _write_manifest(out, size, crop, entries, bad, images)
    report.bad = [{"image": rel, "where": images[rel][1], "reason": reason} for rel, reason in bad.items()]
    return report


def _write_manifest(out: Path, size: int, crop: bool, entries: Dict[str, str], bad: Dict[str, str], images) -> None:
    data = {"size": size, "fov_crop": crop, "entries": entries,
            "bad": {rel: {"where": images[rel][1], "reason": reason} for rel, reason in bad.items()}}
    write_text_atomic(out / MANIFEST, json.dumps(data))


class CacheIndex:
    """Maps dataframe paths to cached files when the image root is a prepared cache."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = load_manifest(self.root)
        self.active = bool(manifest)
        self.entries: Dict[str, str] = manifest.get("entries", {})
        self.bad: Dict[str, Dict[str, str]] = manifest.get("bad", {})
        self.size = manifest.get("size")

    def resolve(self, relative: str, source: str, row: int) -> Path:
        if not self.active:
            return resolve_image_path(self.root, relative, source, row)
        if relative in self.entries:
            return resolve_image_path(self.root, self.entries[relative], source, row)
        reason = self.bad.get(relative, {}).get("reason")
        raise BadImageError(self.root / relative, f"unreadable when the cache was prepared ({reason})" if reason
                            else "not in the prepared cache (re-run `fundus-vlp prepare` with this dataframe)",
                            where(source, row))
