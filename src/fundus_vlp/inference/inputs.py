"""Images of any kind -> model inputs, through the model's evaluation transform and its decoding rule.

``images`` may be: a folder (its image files, sorted by name, recursively), an image file path, a PIL image,
an H×W(×C) array (uint8, uint16 or float in [0, 1]), a 3×H×W float tensor in [0, 1], or a list of any of these.

A file is decoded the way the transform asks (``FundusTransform.draft_size``): JPEGs at a reduced size when
that still gives the same model input within a few 1/255 steps. Training, evaluation, ``classify``,
``predict``, the web app and the ONNX runtime all decode through ``decode`` here, so one JPEG gets one set of
probabilities whichever entry point reads it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.dataframes import IMAGE_EXTENSIONS
from ..data.images import BadImageError, image_from_array, image_from_pil, load_image
from ..data.transforms import build_transform

ImageLike = Union[str, Path, np.ndarray, torch.Tensor, "PIL.Image.Image"]  # noqa: F821
Progress = Union[None, bool, Callable[[int, int], None]]

# A progress bar appears by itself from this many images on (progress=None).
AUTO_PROGRESS_MIN_IMAGES = 64


@dataclass
class FolderListing:
    """The image files of a folder, and the entries that look like images but were skipped, with why."""

    files: List[Path] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)


def scan_folder(folder: str | Path) -> FolderListing:
    """Image files under ``folder`` (recursive, sorted; hidden files and folders skipped). Symbolic links are
    followed once: a link loop, a broken link or a folder whose name ends like an image is named in ``skipped``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    listing = FolderListing()
    _walk(folder, listing, {folder.resolve()})
    listing.files.sort()
    listing.skipped.sort()
    return listing


def _walk(directory: Path, listing: FolderListing, ancestors: set) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        listing.skipped.append((str(directory), f"folder unreadable ({exc.strerror or exc})"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        looks_like_image = path.suffix.lower() in IMAGE_EXTENSIONS
        try:
            target = path.resolve(strict=True)
        except RuntimeError:  # Python 3.11 reports a symlink loop this way
            listing.skipped.append((str(path), "symbolic link loop"))
            continue
        except OSError as exc:
            loop = getattr(exc, "errno", None) == 40  # ELOOP
            if looks_like_image or loop:
                listing.skipped.append((str(path), "symbolic link loop" if loop else "broken symbolic link"))
            continue
        if target.is_dir():
            if target in ancestors:
                listing.skipped.append((str(path), "symbolic link loop (points to a folder above it)"))
            elif looks_like_image:
                listing.skipped.append((str(path), "a folder, not an image file"))
            else:
                _walk(path, listing, ancestors | {target})
        elif looks_like_image:
            if target.is_file():
                listing.files.append(path)
            else:
                listing.skipped.append((str(path), "not a regular file"))


def list_images(folder: str | Path) -> List[Path]:
    """The image files under ``folder`` (see ``scan_folder``)."""
    return scan_folder(folder).files


def expand_inputs(images, skipped: Optional[List[Tuple[str, str]]] = None) -> List[Tuple[str, ImageLike]]:
    """``(name, item)`` per image: paths keep their path as name, in-memory images are ``image_<i>``.
    Folder entries that were skipped are appended to ``skipped`` when given."""
    if isinstance(images, (str, Path, np.ndarray, torch.Tensor)) or _is_pil(images):
        images = [images]
    out: List[Tuple[str, ImageLike]] = []
    for item in images:
        if isinstance(item, (str, Path)):
            if Path(item).is_dir():
                listing = scan_folder(item)
                out += [(str(p), p) for p in listing.files]
                if skipped is not None:
                    skipped += listing.skipped
            else:
                out.append((str(item), Path(item)))
        else:
            name = getattr(item, "filename", "") if _is_pil(item) else ""
            out.append((name or f"image_{len(out)}", item))
    return out


def _is_pil(obj) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def decode(item: ImageLike, transform=None, max_pixels: Optional[int] = None,
           where: Optional[str] = None) -> torch.Tensor:
    """One image as a 3×H×W float tensor in [0, 1], decoded as ``transform`` asks (its ``draft_size``);
    a bad file raises ``BadImageError`` naming it (and ``where``, e.g. a dataframe row)."""
    if isinstance(item, (str, Path)):
        return load_image(item, where, max_pixels=max_pixels, draft_size=getattr(transform, "draft_size", None))
    if _is_pil(item):
        return image_from_pil(item)
    if isinstance(item, np.ndarray):
        if item.ndim == 3 and item.shape[0] in (1, 3) and item.shape[2] not in (1, 3, 4):
            raise ValueError(f"array of shape {item.shape}: expected H×W×C (channels last)")
        return image_from_array(item)
    if isinstance(item, torch.Tensor):
        if item.ndim != 3 or item.shape[0] != 3 or not item.is_floating_point():
            raise ValueError(f"tensor of shape {tuple(item.shape)}/{item.dtype}: expected a 3×H×W float image in [0, 1]")
        return item.detach().float().cpu()
    raise TypeError(f"unsupported image input {type(item).__name__}: give a path, folder, PIL image, array or tensor")


class ImageFiles(Dataset):
    """Decoded, transformed image files for a DataLoader; errors name the file and its dataframe row."""

    def __init__(self, paths: Sequence[Path], transform, where: Optional[Sequence[str]] = None):
        self.paths, self.transform = list(paths), transform
        self.where = list(where) if where is not None else [None] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(decode(self.paths[i], self.transform, where=self.where[i]))


def eval_loader(preprocess, paths: Sequence[Path], where: Optional[Sequence[str]] = None, batch_size: int = 32,
                num_workers: int = 0) -> DataLoader:
    """Image files in order through the evaluation transform (clean, no augmentation)."""
    return DataLoader(ImageFiles(paths, build_transform(preprocess, train=False), where), batch_size=batch_size,
                      shuffle=False, num_workers=num_workers)


@dataclass
class Batches:
    """The names of the images that decoded, and of those that did not (with the reason)."""

    names: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (name, reason)


def preprocessed_batches(items: Sequence[Tuple[str, ImageLike]], preprocess, batch_size: int = 32,
                         skip_bad: bool = False, max_pixels: Optional[int] = None,
                         progress: Progress = None, record: Optional[Batches] = None) -> Iterable[torch.Tensor]:
    """B×3×S×S model inputs in order. ``skip_bad``: bad files go to ``record.failed`` instead of raising."""
    transform = build_transform(preprocess, train=False)
    record = record if record is not None else Batches()
    bar = _progress_bar(progress, len(items))
    batch: List[torch.Tensor] = []
    for done, (name, item) in enumerate(items, 1):
        try:
            batch.append(transform(decode(item, transform, max_pixels)))
            record.names.append(name)
        except BadImageError as exc:
            if not skip_bad:
                raise
            record.failed.append((name, exc.reason))
        _tick(bar, progress, done, len(items))
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)
    if bar is not None:
        bar.close()


def _progress_bar(progress: Progress, total: int):
    show = progress is True or (progress is None and total >= AUTO_PROGRESS_MIN_IMAGES)
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="images", unit="img", leave=False)


def _tick(bar, progress: Progress, done: int, total: int) -> None:
    if bar is not None:
        bar.update(1)
    if callable(progress) and not isinstance(progress, bool):
        progress(done, total)  # e.g. a GUI's progress callback
