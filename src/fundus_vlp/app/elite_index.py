"""The elite index of a model folder: image embeddings of image–caption pairs, for nearest-example lookup.

Two files beside ``model.safetensors``:

* ``elite_index.safetensors`` — ``embeddings`` (N×D float32, unit-norm image embeddings of this model) and,
  unless disabled, ``thumbnails`` (N×T×T×3 uint8, each image padded to a square and resized to T pixels), so
  the folder shows its examples without the original images;
* ``elite_index.json`` — ``format_version``, ``model_fingerprint`` (hash of the weights the embeddings came
  from: an index built with other weights is reported stale, not used silently), ``embed_dim``,
  ``image_root``, ``thumbnail_size`` and one ``entries`` item per row: ``{image, caption, source, row}``.

Built by ``fundus-vlp index --model DIR --elite CSV --image-root R`` from any caption file
``read_captions`` accepts. Plain JSON and safetensors: nothing is unpickled on load.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from ..constants import WEIGHTS_NAME
from ..hub import CheckpointError

if TYPE_CHECKING:
    import torch

INDEX_WEIGHTS = "elite_index.safetensors"
INDEX_META = "elite_index.json"
INDEX_FORMAT = 1
DEFAULT_THUMBNAIL_SIZE = 96


@dataclass
class EliteIndex:
    embeddings: torch.Tensor  # N×D, unit rows
    entries: List[Dict]  # {image, caption, source, row}
    model_fingerprint: str
    image_root: str = ""
    thumbnails: Optional[torch.Tensor] = None  # N×T×T×3 uint8
    meta: Dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def nearest(self, queries: torch.Tensor, k: int = 3) -> Tuple[torch.Tensor, torch.Tensor]:
        """(cosine similarities, indices), each Q×min(k, N), most similar first."""
        sims = queries.float() @ self.embeddings.float().T
        return sims.topk(min(k, len(self)), dim=-1)

    def thumbnail(self, i: int):
        """The i-th thumbnail as an H×W×3 uint8 array, or None when the index stores none."""
        return None if self.thumbnails is None else self.thumbnails[i].numpy()


def weights_fingerprint(model_dir: str | Path) -> str:
    """Identity of a model folder's weights (the same hash the evaluation feature cache uses)."""
    from ..inference.features import model_fingerprint

    return model_fingerprint(None, Path(model_dir) / WEIGHTS_NAME)


def make_thumbnail(image: torch.Tensor, size: int) -> torch.Tensor:
    """3×H×W float in [0, 1] -> size×size×3 uint8, aspect kept, zero-padded like the model's input."""
    from ..data.transforms import resize_pad_to_square

    import torch

    square = resize_pad_to_square(image, size)
    return (square.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def read_elite_rows(caption_files: Sequence[str | Path], image_root: str | Path) -> Tuple[List[Path], List[Dict]]:
    """Image paths and entries of caption files; a missing image is an error naming its file and row."""
    from ..data.dataframes import DataFormatError, read_captions, resolve_image_path, where

    paths: List[Path] = []
    entries: List[Dict] = []
    for csv in caption_files:
        frame = read_captions(csv)
        for image, caption, row in zip(frame["image"], frame["caption"], frame["row"]):
            path = resolve_image_path(image_root, str(image), csv, int(row))
            if not path.is_file():
                raise DataFormatError(f"{where(csv, int(row))}: image {image!r} not found under {image_root}")
            paths.append(path)
            entries.append({"image": str(image), "caption": str(caption), "source": str(csv), "row": int(row)})
    if not entries:
        raise DataFormatError(f"no image–caption rows in {[str(c) for c in caption_files]}")
    return paths, entries


def build_elite_index(model, model_dir: str | Path, caption_files: Sequence[str | Path], image_root: str | Path,
                      thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE, batch_size: int = 32,
                      device: str = "cpu", progress: bool = True) -> EliteIndex:
    """Embed every image of the caption files with ``model`` (the model saved in ``model_dir``)."""
    from ..data.images import load_image
    from ..inference.embedding import extract_features

    paths, entries = read_elite_rows(caption_files, image_root)
    where = [f"{e['source']}, row {e['row']}" for e in entries]
    embeddings = extract_features(model, paths, where=where, batch_size=batch_size, device=device,
                                  progress=progress, desc="elite index")
    import torch

    thumbnails = None
    if thumbnail_size > 0:
        thumbnails = torch.stack([make_thumbnail(load_image(p, w), thumbnail_size) for p, w in zip(paths, where)])
    return EliteIndex(embeddings=embeddings, entries=entries, model_fingerprint=weights_fingerprint(model_dir),
                      image_root=str(Path(image_root).resolve()), thumbnails=thumbnails)


def save_elite_index(index: EliteIndex, model_dir: str | Path) -> Tuple[Path, Path]:
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    tensors = {"embeddings": index.embeddings.float().contiguous()}
    if index.thumbnails is not None:
        tensors["thumbnails"] = index.thumbnails.contiguous()
    meta = {"format_version": INDEX_FORMAT, "model_fingerprint": index.model_fingerprint,
            "embed_dim": int(index.embeddings.shape[1]), "count": len(index), "image_root": index.image_root,
            "thumbnail_size": 0 if index.thumbnails is None else int(index.thumbnails.shape[1]),
            "entries": index.entries}
    save_file(tensors, str(model_dir / INDEX_WEIGHTS))
    (model_dir / INDEX_META).write_text(json.dumps(meta, indent=1))
    return model_dir / INDEX_WEIGHTS, model_dir / INDEX_META


def load_elite_index(model_dir: str | Path) -> Optional[EliteIndex]:
    """The folder's index, or None when it has none; a malformed index is a ``CheckpointError`` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    meta_path, weights_path = model_dir / INDEX_META, model_dir / INDEX_WEIGHTS
    if not meta_path.is_file() and not weights_path.is_file():
        return None
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: missing; an elite index needs both {INDEX_META} and {INDEX_WEIGHTS}")
    try:
        meta = json.loads(meta_path.read_text())
        entries, fingerprint = meta["entries"], meta["model_fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{meta_path}: not an elite index ({exc})") from exc
    if meta.get("format_version", 0) > INDEX_FORMAT:
        raise CheckpointError(f"{meta_path}: format_version {meta['format_version']} is newer than this fundus-vlp")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({exc})") from exc
    embeddings = tensors.get("embeddings")
    if embeddings is None or embeddings.ndim != 2 or embeddings.shape[0] != len(entries):
        shape = None if embeddings is None else tuple(embeddings.shape)
        raise CheckpointError(f"{weights_path}: 'embeddings' of shape {shape} does not match {len(entries)} entries "
                              f"in {meta_path}")
    thumbnails = tensors.get("thumbnails")
    if thumbnails is not None and thumbnails.shape[0] != len(entries):
        raise CheckpointError(f"{weights_path}: {thumbnails.shape[0]} thumbnails for {len(entries)} entries")
    return EliteIndex(embeddings=embeddings, entries=list(entries), model_fingerprint=str(fingerprint),
                      image_root=str(meta.get("image_root", "")), thumbnails=thumbnails, meta=meta)
