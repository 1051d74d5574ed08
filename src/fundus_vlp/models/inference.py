"""Inference on a loaded model: image inputs of any kind -> embeddings -> zero-shot probabilities.

``FundusCLIP.classify`` / ``embed_images`` / ``embed_texts`` delegate here, and the ONNX runtime
(``models/onnx.py``) reuses the input handling. Every image goes through the model's evaluation
transform (``model.cfg.preprocess``), exactly as in evaluation and ``predict``.

``images`` may be: a folder (its image files, sorted by name, recursively), an image file path, a PIL image,
an H×W(×C) array (uint8, uint16 or float in [0, 1]), a 3×H×W float tensor in [0, 1], or a list of any of these.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..data.dataframes import IMAGE_EXTENSIONS
from ..data.images import BadImageError, image_from_array, image_from_pil, load_image
from ..data.transforms import build_transform
from ..runtime.device import resolve_device
from .zero_shot import (DEFAULT_TEMPLATES, build_zero_shot_classifier, encode_texts, load_knowledge,
                        multilabel_logits, negative_prototypes, zero_shot_logits)

ImageLike = Union[str, Path, np.ndarray, torch.Tensor, "PIL.Image.Image"]  # noqa: F821
Progress = Union[None, bool, Callable[[int, int], None]]

# A progress bar appears by itself from this many images on (progress=None).
AUTO_PROGRESS_MIN_IMAGES = 64
DEFAULT_KNOWLEDGE = "fundus_en"


def list_images(folder: str | Path) -> List[Path]:
    """The image files under ``folder`` (recursive, sorted; hidden files and folders skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files)


def expand_inputs(images) -> List[Tuple[str, ImageLike]]:
    """``(name, item)`` per image: paths keep their path as name, in-memory images are ``image_<i>``."""
    if isinstance(images, (str, Path, np.ndarray, torch.Tensor)) or _is_pil(images):
        images = [images]
    out: List[Tuple[str, ImageLike]] = []
    for item in images:
        if isinstance(item, (str, Path)):
            if Path(item).is_dir():
                out += [(str(p), p) for p in list_images(item)]
            else:
                out.append((str(item), Path(item)))
        else:
            name = getattr(item, "filename", "") if _is_pil(item) else ""
            out.append((name or f"image_{len(out)}", item))
    return out


def _is_pil(obj) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def decode(item: ImageLike, max_pixels: Optional[int] = None) -> torch.Tensor:
    """One image as a 3×H×W float tensor in [0, 1]; a bad file raises ``BadImageError`` naming it."""
    if isinstance(item, (str, Path)):
        return load_image(item, max_pixels=max_pixels)
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


@dataclass
class Batches:
    """Preprocessed image batches, with the names of the images that decoded and of those that did not."""

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
            batch.append(transform(decode(item, max_pixels)))
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


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def _place(model, device) -> torch.device:
    """Move the model to ``device`` when one is given ("auto", "cpu", "cuda:1"); else use where it is."""
    if device is None:
        return model_device(model)
    dev = resolve_device(str(device))
    model.to(dev)
    return dev


@torch.no_grad()
def embed_images(model, images, batch_size: int = 32, device=None, progress: Progress = None,
                 skip_bad: bool = False, record: Optional[Batches] = None,
                 max_pixels: Optional[int] = None) -> torch.Tensor:
    """N×D unit-norm float32 image embeddings (on the CPU), in the order of ``expand_inputs(images)``."""
    dev = _place(model, device)
    model.eval()
    items = expand_inputs(images)
    if not items:
        raise ValueError("no images given (an empty list, or a folder without image files)")
    out = [model.encode_image(x.to(dev), normalize=True).float().cpu()
           for x in preprocessed_batches(items, model.cfg.preprocess, batch_size, skip_bad, max_pixels, progress,
                                         record)]
    return torch.cat(out) if out else torch.empty(0, model.cfg.embed_dim)


@torch.no_grad()
def embed_texts(model, texts: Union[str, Sequence[str]], batch_size: int = 64, device=None) -> torch.Tensor:
    """P×D unit-norm float32 text embeddings (on the CPU)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given")
    return encode_texts(model, texts, batch_size=batch_size, device=_place(model, device))


def check_labels(labels: Union[str, Sequence[str]], multilabel: bool) -> List[str]:
    labels = [labels] if isinstance(labels, str) else [str(c).strip() for c in labels]
    if any(not c for c in labels):
        raise ValueError(f"empty label in {labels}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels in {labels}")
    if len(labels) < (1 if multilabel else 2):
        raise ValueError(f"single-label classification needs at least two labels, got {labels} "
                         "(or use multilabel=True for independent per-label probabilities)")
    return labels


def resolve_knowledge(domain_knowledge):
    """True -> the shipped English knowledge base; False/None -> bare labels; a name or KnowledgeBase as given."""
    if domain_knowledge is True:
        return load_knowledge(DEFAULT_KNOWLEDGE)
    if not domain_knowledge:
        return None
    if isinstance(domain_knowledge, (str, Path)):
        return load_knowledge(str(domain_knowledge))
    return domain_knowledge


@torch.no_grad()
def zero_shot_heads(model, labels: Sequence[str], domain_knowledge=True, multilabel: bool = False,
                    templates: Optional[Sequence[str]] = None, device=None):
    """Positive prototypes K×D (and the negative ones for multi-label, else None) for ``labels``."""
    dev = _place(model, device)
    knowledge = resolve_knowledge(domain_knowledge)
    positive = build_zero_shot_classifier(model, labels, templates or DEFAULT_TEMPLATES, knowledge, device=dev)
    negative = negative_prototypes(model, labels, device=dev) if multilabel else None
    return positive, negative


def label_logits(features: torch.Tensor, positive: torch.Tensor, negative: Optional[torch.Tensor],
                 scale) -> torch.Tensor:
    """N×K logits: s·V·Tᵀ (single-label) or the positive-minus-negative pair logits (multi-label)."""
    if negative is None:
        return zero_shot_logits(features, positive, scale)
    return multilabel_logits(features, positive, negative, scale)


def logits_to_probs(logits: torch.Tensor, multilabel: bool, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over labels, or one sigmoid per label; ``temperature`` divides the logits (calibration)."""
    z = (logits if logits.is_floating_point() else logits.float()) / float(temperature)
    return torch.sigmoid(z) if multilabel else z.softmax(dim=-1)


def probabilities(features: torch.Tensor, positive: torch.Tensor, negative: Optional[torch.Tensor],
                  scale) -> torch.Tensor:
    """Softmax over labels (single-label) or one sigmoid per positive/negative pair (multi-label)."""
    return logits_to_probs(label_logits(features, positive, negative, scale), multilabel=negative is not None)


def classify(model, images, labels, domain_knowledge=True, multilabel: bool = False, batch_size: int = 32,
             device=None, progress: Progress = None, templates: Optional[Sequence[str]] = None):
    """Zero-shot probabilities as a DataFrame: one row per image (index = path or ``image_<i>``), one column per label."""
    import pandas as pd

    labels = check_labels(labels, multilabel)
    positive, negative = zero_shot_heads(model, labels, domain_knowledge, multilabel, templates, device)
    record = Batches()
    feats = embed_images(model, images, batch_size=batch_size, device=device, progress=progress, record=record)
    probs = probabilities(feats, positive, negative, model.zero_shot_scale())
    return pd.DataFrame(probs.numpy().astype(np.float64), index=pd.Index(record.names, name="image"),
                        columns=labels)
