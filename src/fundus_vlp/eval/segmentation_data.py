"""Image/mask pairs of a segmentation experiment: listing, mask decoding and validation.

Pairs come from a CSV ``image, mask`` (``Experiment.masks``; paths relative to ``image_root``) or from an image
folder and a mask folder (``image_dir``, ``mask_dir``, searched recursively) paired by file stem, as in the
DRIVE / FIVES / IDRiD / REFUGE releases; ``test_masks`` / ``test_image_dir`` + ``test_mask_dir`` give an
official test set, used as the test split of every fold.

Mask decoding (one class index per pixel):

* grey-level masks (``L``, ``1``, 16-bit, or RGB/palette masks whose three channels are equal) map each grey
  level through ``mask_values``; by default level ``k`` is class ``k`` and, for two classes, 255 is class 1
  (binary PNGs: 0 background, 255 foreground);
* coloured masks need ``mask_colors`` (class name -> [R, G, B]); every pixel must have one of those colours.

Every problem is an error naming the file: a missing mask (or an image without a mask of the same stem), an
image and mask of different sizes, a grey level or colour that maps to no class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

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
    masks: List[Path]
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
    parts: List[Tuple[List[Path], List[Path], List[str], bool]] = []
    if exp.masks:
        parts.append(_pairs_from_csv(exp, exp.masks) + (False,))
    elif exp.image_dir and exp.mask_dir:
        parts.append(_pairs_from_folders(exp, exp.image_dir, exp.mask_dir) + (False,))
    else:
        raise ExperimentError(f"experiment {exp.name!r}: a segmentation experiment needs `masks` (CSV image, mask) "
                              f"or `image_dir` and `mask_dir`")
    if exp.test_masks:
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
    missing += [f"  mask {m} ({w})" for m, w in zip(masks, where) if not m.is_file()]
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


# -- loading -----------------------------------------------------------------------------------------------

def load_pairs(pairs: SegmentationPairs, exp: Experiment, size: int, progress: bool = False
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) uint8 and masks (N, S, S) uint8 at the training resolution ``size`` (images:
    antialiased bilinear; masks: nearest). Every mask is decoded and checked against its image first."""
    from tqdm.auto import tqdm

    images = torch.empty((len(pairs), 3, size, size), dtype=torch.uint8)
    masks = torch.empty((len(pairs), size, size), dtype=torch.uint8)
    for i in tqdm(range(len(pairs)), desc="images+masks", disable=None if progress else True, leave=False):
        try:
            img = load_image(pairs.images[i], pairs.where[i])
        except BadImageError as exc:
            raise ExperimentError(str(exc)) from exc
        mask = decode_mask(pairs.masks[i], exp.classes, exp.mask_values, exp.mask_colors, pairs.where[i])
        if tuple(img.shape[1:]) != mask.shape:
            raise MaskError(f"{pairs.masks[i]}: mask is {mask.shape[1]}x{mask.shape[0]} but image {pairs.images[i]} "
                            f"is {img.shape[2]}x{img.shape[1]} ({pairs.where[i]})")
        img = F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        images[i] = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        m = torch.from_numpy(mask)[None, None].float()
        masks[i] = F.interpolate(m, size=(size, size), mode="nearest")[0, 0].to(torch.uint8)
    return images, masks
