"""Image/mask pairs of a segmentation experiment: listing, mask decoding and validation.

Pairs come from a CSV ``image, mask`` (``Experiment.masks``; paths relative to ``image_root``) or from an image
folder and a mask folder (``image_dir``, ``mask_dir``, searched recursively) paired by file stem, as in the
DRIVE / FIVES / REFUGE releases; ``test_masks`` / ``test_image_dir`` + ``test_mask_dir`` give an
official test set, used as the test split of every fold.

Multi-label lesion sets (IDRiD, FGADR) have one mask folder per class (``mask_dirs``: class -> folder,
``test_mask_dirs`` for the official test set); a mask's file stem is its image's stem plus the class's
``mask_suffixes`` entry (IDRiD: ``IDRiD_01.jpg`` / ``IDRiD_01_MA.tif``). An image without a file in a
class's folder has none of that class; a mask file without an image is an error. Each lesion mask is
binary: one grey level above 0 (any: 1, 255), or red on black (IDRiD's RGB masks); the decoded masks store
bit ``k`` for class ``k`` (at most 8 classes), so lesions may overlap.

Mask decoding (one class index per pixel):

* grey-level masks (``L``, ``1``, 16-bit, or RGB/palette masks whose three channels are equal) map each grey
  level through ``mask_values``; by default level ``k`` is class ``k`` and, for two classes, 255 is class 1
  (binary PNGs: 0 background, 255 foreground);
* coloured masks need ``mask_colors`` (class name -> [R, G, B]); every pixel must have one of those colours.

Every problem is an error naming the file: a missing mask (or an image without a mask of the same stem), an
image and mask of different sizes, a grey level or colour that maps to no class, a mask over the image
pixel limit (a decompression bomb).

Dataset scale: :func:`cached_arrays` decodes every pair once, at the working size, into a memory-mapped
cache (``images.npy`` (N, 3, S, S) and ``masks.npy`` (N, S, S), uint8, plain ``.npy``: no pickle) keyed
by the files' paths, sizes and modification times and the decoding settings; later runs open it without
decoding anything, and training reads only the rows of each batch.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.dataframes import IMAGE_EXTENSIONS, DataFormatError, _read_csv, _require_columns, resolve_image_path
from ..data.images import BadImageError, load_image, open_image
from .experiments import Experiment, ExperimentError, _dataframe_path

MASK_EXTENSIONS = IMAGE_EXTENSIONS + (".gif",)  # DRIVE ships its vessel masks as GIF


class MaskError(ExperimentError):
    """A mask that is missing, does not match its image, or holds values outside the experiment's classes."""


@dataclass
class SegmentationPairs:
    """Image and mask files of an experiment; ``official_test`` marks the official test pairs.

    ``labels`` (all zero) and ``groups`` (None) let the classification split helpers draw the folds."""

    images: List[Path]
    masks: List[Union[Path, Dict[str, Path]]]  # one mask, or (multi-label) class -> mask file (absent: none)
    where: List[str]  # "file, row N" or "folder pairing" for error messages
    official_test: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray:
        return np.zeros(len(self), dtype=int)

    groups = None


# -- listing -----------------------------------------------------------------------------------------------

def list_pairs(exp: Experiment) -> SegmentationPairs:
    """Every (image, mask) pair of ``exp``; fails naming the first missing files."""
    if exp.image_root is None:
        raise ExperimentError(f"experiment {exp.name!r}: no image_root; pass image_root=DIR (or set $FUNDUS_VLP_DATA)")
    parts: List[Tuple[List[Path], list, List[str], bool]] = []
    if exp.mask_dirs:
        if not exp.image_dir:
            raise ExperimentError(f"experiment {exp.name!r}: mask_dirs (one folder per class) need image_dir")
        parts.append(_pairs_from_label_dirs(exp, exp.image_dir, exp.mask_dirs) + (False,))
    elif exp.masks:
        parts.append(_pairs_from_csv(exp, exp.masks) + (False,))
    elif exp.image_dir and exp.mask_dir:
        parts.append(_pairs_from_folders(exp, exp.image_dir, exp.mask_dir) + (False,))
    else:
        raise ExperimentError(f"experiment {exp.name!r}: a segmentation experiment needs `masks` (CSV image, mask), "
                              f"`image_dir` and `mask_dir`, or `image_dir` and `mask_dirs` (one folder per class)")
    if exp.test_mask_dirs:
        if not exp.test_image_dir:
            raise ExperimentError(f"experiment {exp.name!r}: test_mask_dirs need test_image_dir")
        parts.append(_pairs_from_label_dirs(exp, exp.test_image_dir, exp.test_mask_dirs) + (True,))
    elif exp.test_masks:
        parts.append(_pairs_from_csv(exp, exp.test_masks) + (True,))
    elif exp.test_image_dir or exp.test_mask_dir:
        if not (exp.test_image_dir and exp.test_mask_dir):
            raise ExperimentError(f"experiment {exp.name!r}: give both test_image_dir and test_mask_dir")
        parts.append(_pairs_from_folders(exp, exp.test_image_dir, exp.test_mask_dir) + (True,))
    images, masks, where, official = [], [], [], []
    for imgs, msks, wh, is_test in parts:
        images += imgs
        masks += msks
        where += wh
        official += [is_test] * len(imgs)
    missing = [f"  {p} ({w})" for p, w in zip(images, where) if not p.is_file()]
    missing += [f"  mask {m} ({w})" for ms, w in zip(masks, where)
                for m in (ms.values() if isinstance(ms, dict) else [ms]) if not m.is_file()]
    if missing:
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MaskError(f"experiment {exp.name!r}: {len(missing)} files not found (image_root {exp.image_root}):\n"
                        + "\n".join(missing[:5]) + more)
    if not images:
        raise ExperimentError(f"experiment {exp.name!r}: no image/mask pairs")
    return SegmentationPairs(images, masks, where, np.array(official, dtype=bool))


def _pairs_from_csv(exp: Experiment, name: str) -> Tuple[List[Path], List[Path], List[str]]:
    path = _dataframe_path(exp, name)
    try:
        frame = _read_csv(path)
        _require_columns(frame, path, ["image", "mask"])
        images, masks, where = [], [], []
        for row, (img, msk) in enumerate(zip(frame["image"], frame["mask"]), start=1):
            if not str(msk).strip():
                raise MaskError(f"{path}, row {row}: no mask given for image {img!r}")
            images.append(resolve_image_path(exp.image_root, img, path, row))
            masks.append(resolve_image_path(exp.image_root, msk, path, row))
            where.append(f"{path}, row {row}")
    except DataFormatError as exc:
        raise ExperimentError(str(exc)) from exc
    return images, masks, where


def _files_by_stem(folder: Path, extensions: Sequence[str]) -> Dict[str, Path]:
    out: Dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in extensions:
            if p.stem in out:
                raise ExperimentError(f"{folder}: two files share the stem {p.stem!r}: {out[p.stem]} and {p}")
            out[p.stem] = p
    return out


def _pairs_from_folders(exp: Experiment, image_dir: str, mask_dir: str) -> Tuple[List[Path], List[Path], List[str]]:
    root = Path(exp.image_root)
    idir, mdir = root / image_dir, root / mask_dir
    for d in (idir, mdir):
        if not d.is_dir():
            raise ExperimentError(f"experiment {exp.name!r}: folder not found: {d}")
    imgs, msks = _files_by_stem(idir, IMAGE_EXTENSIONS), _files_by_stem(mdir, MASK_EXTENSIONS)
    lonely = [imgs[s] for s in imgs if s not in msks]
    if lonely:
        raise MaskError(f"experiment {exp.name!r}: {len(lonely)} image(s) without a mask of the same name in {mdir}: "
                        + ", ".join(str(p) for p in lonely[:5]))
    stems = sorted(imgs)
    return [imgs[s] for s in stems], [msks[s] for s in stems], [f"{mdir} (paired with {imgs[s].name})" for s in stems]


def _pairs_from_label_dirs(exp: Experiment, image_dir: str, mask_dirs: Dict[str, str]
                           ) -> Tuple[List[Path], List[Dict[str, Path]], List[str]]:
    """Images of ``image_dir`` with, per class, the mask of ``mask_dirs[class]`` whose stem is the image's
    stem + ``mask_suffixes[class]`` (none there: the image has none of that class)."""
    root = Path(exp.image_root)
    if set(mask_dirs) != set(exp.classes):
        raise ExperimentError(f"experiment {exp.name!r}: mask folders are given for {sorted(mask_dirs)}, but the "
                              f"classes are {list(exp.classes)} (one folder per class)")
    idir = root / image_dir
    if not idir.is_dir():
        raise ExperimentError(f"experiment {exp.name!r}: folder not found: {idir}")
    imgs = _files_by_stem(idir, IMAGE_EXTENSIONS)
    per_image: Dict[str, Dict[str, Path]] = {stem: {} for stem in imgs}
    for cls in exp.classes:
        mdir, suffix = root / mask_dirs[cls], exp.mask_suffixes.get(cls, "")
        if not mdir.is_dir():
            raise ExperimentError(f"experiment {exp.name!r}: mask folder of {cls!r} not found: {mdir}")
        for stem, path in _files_by_stem(mdir, MASK_EXTENSIONS).items():
            base = stem[: len(stem) - len(suffix)] if suffix and stem.endswith(suffix) else None if suffix else stem
            if base not in per_image:
                raise MaskError(f"{path}: {cls} mask without an image (expected {idir}/{base or stem}.* with the "
                                f"mask suffix {suffix!r} removed)")
            per_image[base][cls] = path
    stems = sorted(imgs)
    return [imgs[s] for s in stems], [per_image[s] for s in stems], \
        [f"{idir / imgs[s].name} and its {len(per_image[s])} lesion mask(s)" for s in stems]


# -- decoding ----------------------------------------------------------------------------------------------

def default_mask_values(n_classes: int) -> Dict[int, int]:
    values = {k: k for k in range(n_classes)}
    if n_classes == 2:
        values[255] = 1
    return values


def decode_mask(path: Path, classes: Sequence[str], mask_values: Optional[Dict[int, int]] = None,
                mask_colors: Optional[Dict[str, List[int]]] = None, where: str = "") -> np.ndarray:
    """Class-index map (H, W) int64 of a mask file (rules in the module docstring)."""
    loc = f" ({where})" if where else ""
    try:
        with open_image(path, where) as img:  # the image pixel limit: a decompression-bomb mask is refused
            img.load()
            mode = img.mode
            arr = np.asarray(img.convert("RGB") if mode in ("P", "RGBA", "LA", "CMYK", "YCbCr") else img)
    except BadImageError as exc:
        raise MaskError(f"mask {exc}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MaskError(f"{path}: cannot read mask ({exc}){loc}") from exc
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if arr.ndim == 3:
        if mask_colors:
            return _decode_colours(arr, path, classes, mask_colors, loc)
        if not ((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()):
            raise MaskError(f"{path}: coloured mask, but the experiment has no mask_colors (class -> [R, G, B]){loc}")
        arr = arr[..., 0]
    elif mask_colors:
        raise MaskError(f"{path}: single-channel mask, but the experiment maps colours (mask_colors){loc}")
    values = mask_values or default_mask_values(len(classes))
    lut_keys = np.array(sorted(values), dtype=np.int64)
    arr = arr.astype(np.int64)
    found = np.unique(arr)
    unknown = found[~np.isin(found, lut_keys)]
    if len(unknown):
        raise MaskError(f"{path}: mask value(s) {unknown[:8].tolist()} map to no class; known values "
                        f"{lut_keys.tolist()} (set mask_values: {{value: class index}}){loc}")
    return np.array([values[int(v)] for v in lut_keys], dtype=np.int64)[np.searchsorted(lut_keys, arr)]


def _decode_colours(arr: np.ndarray, path: Path, classes: Sequence[str], colours: Dict[str, List[int]],
                    loc: str) -> np.ndarray:
    unknown_cls = [c for c in colours if c not in classes]
    if unknown_cls:
        raise MaskError(f"mask_colors names unknown class(es) {unknown_cls}; classes: {list(classes)}")
    rgb = arr[..., :3].astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    out = np.full(code.shape, -1, dtype=np.int64)
    for name, (r, g, b) in colours.items():
        out[code == ((r << 16) | (g << 8) | b)] = classes.index(name)
    if (out < 0).any():
        bad = sorted({tuple(int(c) for c in rgb[i, j]) for i, j in zip(*np.nonzero(out < 0))})[:5]
        raise MaskError(f"{path}: {(out < 0).sum()} pixel(s) with colour(s) {bad} not in mask_colors{loc}")
    return out


def decode_binary_mask(path: Path, where: str = "") -> np.ndarray:
    """Bool map (H, W) of a one-class mask: one grey level above 0, or red on black (IDRiD's RGB TIFFs)."""
    loc = f" ({where})" if where else ""
    try:
        with open_image(path, where) as img:
            img.load()
            arr = np.asarray(img.convert("RGB") if img.mode in ("P", "RGBA", "LA", "CMYK", "YCbCr") else img)
    except BadImageError as exc:
        raise MaskError(f"mask {exc}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MaskError(f"{path}: cannot read mask ({exc}){loc}") from exc
    if arr.ndim == 3:
        grey = (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
        if not grey and (arr[..., 1:3] != 0).any():
            raise MaskError(f"{path}: a lesion mask must be grey or red on black; it has other colours{loc}")
        arr = arr[..., 0]
    levels = np.unique(arr)
    if len(levels[levels > 0]) > 1:
        raise MaskError(f"{path}: a lesion mask must be binary (0 and one level); it has levels "
                        f"{levels[:8].tolist()}{loc}")
    return arr > 0


def _decode_labels(pair_masks, exp: Experiment, shape: Tuple[int, int], image: Path, where: str) -> np.ndarray:
    """(H, W) uint8 mask in the stored encoding: class indices, or multi-label bits (bit k = class k)."""
    if not isinstance(pair_masks, dict):
        out = decode_mask(pair_masks, exp.classes, exp.mask_values, exp.mask_colors, where)
        _check_shape(out.shape, shape, pair_masks, image, where)
        return out.astype(np.uint8)
    out = np.zeros(shape, dtype=np.uint8)
    for k, cls in enumerate(exp.classes):
        if cls in pair_masks:
            m = decode_binary_mask(pair_masks[cls], where)
            _check_shape(m.shape, shape, pair_masks[cls], image, where)
            out |= m.astype(np.uint8) << k
    return out


def _check_shape(mask_shape, image_shape, mask: Path, image: Path, where: str) -> None:
    if tuple(mask_shape) != tuple(image_shape):
        raise MaskError(f"{mask}: mask is {mask_shape[1]}x{mask_shape[0]} but image {image} is "
                        f"{image_shape[1]}x{image_shape[0]} ({where})")


def decode_pair(pairs: SegmentationPairs, i: int, exp: Experiment, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pair ``i`` at the working size: image (3, S, S) uint8 (antialiased bilinear) and mask (S, S) uint8
    (nearest), after checking the mask against its image."""
    try:
        img = load_image(pairs.images[i], pairs.where[i])
    except BadImageError as exc:
        raise ExperimentError(str(exc)) from exc
    mask = _decode_labels(pairs.masks[i], exp, tuple(img.shape[1:]), pairs.images[i], pairs.where[i])
    img = F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    m = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(size, size), mode="nearest")[0, 0]
    return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy(), m.to(torch.uint8).numpy()


def _decode_into(pairs: SegmentationPairs, exp: Experiment, size: int, images: np.ndarray, masks: np.ndarray,
                 workers: int, progress: bool) -> None:
    """Fill ``images``/``masks`` (arrays or memory maps) pair by pair, ``workers`` decoding threads, in order
    (the first bad pair raises); at most a few decoded pairs wait in memory at any time."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pairs), desc="images+masks", disable=None if progress else True, leave=False)
    chunk = max(1, workers) * 4
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(pairs), chunk):
            idx = range(start, min(start + chunk, len(pairs)))
            for i, (img, mask) in zip(idx, pool.map(lambda j: decode_pair(pairs, j, exp, size), idx)):
                images[i], masks[i] = img, mask
                bar.update()
    bar.close()


def load_pairs(pairs: SegmentationPairs, exp: Experiment, size: int, progress: bool = False, workers: int = 1
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, S, S) and masks (N, S, S), uint8, decoded into memory (see :func:`cached_arrays`)."""
    images = np.empty((len(pairs), 3, size, size), dtype=np.uint8)
    masks = np.empty((len(pairs), size, size), dtype=np.uint8)
    _decode_into(pairs, exp, size, images, masks, workers, progress)
    return images, masks


def cache_key(pairs: SegmentationPairs, exp: Experiment, size: int) -> str:
    """Changes when a file (path, size, modification time), the working size or the decoding rules change."""
    files = [pairs.images[i] for i in range(len(pairs))]
    for ms in pairs.masks:
        files += sorted(ms.values()) if isinstance(ms, dict) else [ms]
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    rules = {"size": size, "classes": list(exp.classes), "mask_values": {str(k): v for k, v in exp.mask_values.items()},
             "mask_colors": exp.mask_colors, "mask_suffixes": exp.mask_suffixes,
             "multilabel": bool(exp.mask_dirs), "masks_per_image": [sorted(m) if isinstance(m, dict) else None
                                                                     for m in pairs.masks], "version": 1}
    return hashlib.sha256(json.dumps([rules, stats], sort_keys=True).encode()).hexdigest()[:20]


def cached_arrays(pairs: SegmentationPairs, exp: Experiment, size: int, cache_dir: str | Path,
                  progress: bool = False, workers: int = 1) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """Memory-mapped images (N, 3, S, S) and masks (N, S, S), decoded once into ``cache_dir`` and reused.

    Returns the two read-only maps and an info dict (``folder``, ``hit``, ``seconds``, ``bytes``). A cache
    is written to a temporary folder and renamed when complete, so an interrupted decode is never used.
    """
    key = cache_key(pairs, exp, size)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in exp.name)
    folder = Path(cache_dir) / f"{safe}-{size}px-{key}"
    t0, hit = time.perf_counter(), (folder / "done.json").is_file()
    if not hit:
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (len(pairs), 3, size, size))
            masks = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (len(pairs), size, size))
            _decode_into(pairs, exp, size, images, masks, workers, progress)
            images.flush()
            masks.flush()
            del images, masks
            (tmp / "done.json").write_text(json.dumps({"experiment": exp.name, "n": len(pairs), "size": size,
                                                       "key": key}))
            try:
                os.replace(tmp, folder)
            except OSError:  # another run finished the same cache first: theirs is as good
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    images = np.load(folder / "images.npy", mmap_mode="r")
    masks = np.load(folder / "masks.npy", mmap_mode="r")
    if images.shape != (len(pairs), 3, size, size) or masks.shape != (len(pairs), size, size):
        raise ExperimentError(f"segmentation cache {folder} does not match the experiment (shapes "
                              f"{images.shape}, {masks.shape}); delete it")
    return images, masks, {"folder": str(folder), "hit": hit, "seconds": round(time.perf_counter() - t0, 3),
                           "bytes": int(images.nbytes + masks.nbytes)}
