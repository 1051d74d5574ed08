"""Uploaded files: checks before any model sees them (size, image type, decodability), and where they are kept
until they are deleted.

A rejected file gets a reason a person can act on; the other files of the same upload still go through.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Sequence, Tuple

from ..constants import DEFAULT_MAX_IMAGE_PIXELS

if TYPE_CHECKING:
    import torch

# Formats a fundus camera or a screenshot tool writes; everything else is refused by content, not by name.
ALLOWED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "TIFF": "TIFF", "BMP": "BMP", "WEBP": "WebP"}
ALLOWED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_IMAGES = 16
# Pixels per image: the project's one limit (far above any fundus camera; stops decompression bombs before decoding)
MAX_PIXELS = DEFAULT_MAX_IMAGE_PIXELS


@dataclass
class CheckedUploads:
    names: List[str] = field(default_factory=list)  # the user's file names, in upload order
    images: List["torch.Tensor"] = field(default_factory=list)  # 3×H×W float in [0, 1], for display
    paths: List[Path] = field(default_factory=list)  # the accepted files: the model decodes them itself
    rejected: List[Tuple[str, str]] = field(default_factory=list)  # (file name, reason)


def display_name(path: str | Path) -> str:
    return Path(str(path)).name


def _allowed() -> str:
    return ", ".join(ALLOWED_FORMATS.values())


def check_upload(path: str | Path, max_bytes: int) -> Tuple[torch.Tensor | None, str | None]:
    """(decoded image, None) for an acceptable file, else (None, reason)."""
    from PIL import Image, UnidentifiedImageError

    from ..data.images import BadImageError, load_image

    path = Path(path)
    size = path.stat().st_size if path.is_file() else -1
    if size < 0:
        return None, "the upload did not arrive"
    if size == 0:
        return None, "empty file (0 bytes)"
    if size > max_bytes:
        return None, f"{size / 1e6:.1f} MB is over the upload limit of {max_bytes / 1e6:g} MB per image"
    try:
        with Image.open(path) as img:
            fmt = img.format
    except Image.DecompressionBombError:
        return None, f"too many pixels (more than {MAX_PIXELS // 1_000_000} Mpixel)"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None, f"not an image file (accepted: {_allowed()})"
    if fmt not in ALLOWED_FORMATS:
        return None, f"{fmt} images are not accepted (accepted: {_allowed()})"
    try:
        return load_image(path, max_pixels=MAX_PIXELS), None
    except BadImageError as exc:
        return None, exc.reason


def _unique(name: str, taken: Sequence[str]) -> str:
    """Two uploads with the same file name stay apart in the results ("a.png", "a.png (2)")."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name} ({n})"
    return candidate


def check_uploads(paths: Sequence[str | Path] | None, max_mb: float = DEFAULT_MAX_UPLOAD_MB,
                  max_images: int = DEFAULT_MAX_IMAGES) -> CheckedUploads:
    out = CheckedUploads()
    paths = list(paths or [])
    for i, path in enumerate(paths):
        name = display_name(path)
        if i >= max_images:
            out.rejected.append((name, f"more than {max_images} images in one request; upload the rest separately"))
            continue
        image, reason = check_upload(path, int(max_mb * 1e6))
        if image is None:
            out.rejected.append((name, reason))
        else:
            out.names.append(_unique(name, out.names))
            out.images.append(image)
            out.paths.append(Path(path))
    return out


class UploadStore:
    """Where the server keeps uploaded files: a private folder of this process (the web framework writes uploads
    there). Files are deleted after each analysis, accepted or rejected, and the folder at exit: uploads are
    patients' images and must not pile up on the server's disk."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fundus-vlp-uploads-")).resolve()
        atexit.register(self.close)

    def discard(self, paths: Sequence[str | Path] | None) -> int:
        """Delete these uploads (and the folders the framework made for them); files outside the store are
        never touched. Returns how many were deleted."""
        deleted = 0
        for path in paths or []:
            path = Path(str(path)).resolve()
            if self.root not in path.parents:
                continue
            if path.is_file():
                path.unlink()
                deleted += 1
            for folder in path.parents:  # .../<root>/<hash>/<name>: drop the emptied <hash> folder too
                if folder == self.root or not folder.is_dir() or any(folder.iterdir()):
                    break
                folder.rmdir()
        return deleted

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
