"""Image and text embeddings of a loaded model: the one encoding loop behind ``classify``, ``predict``,
evaluation features, the elite index, search and the ONNX runtime.

A model here is anything with ``cfg`` (its ``ModelCfg``), ``encode_image(x, normalize=True, project=True)``,
``encode_text(ids, normalize=True, project=True)``, ``tokenizer`` and ``scale()``: ``FundusCLIP`` and
``OnnxModel`` both are.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from tqdm.auto import tqdm

from ..runtime.device import resolve_device
from .inputs import Batches, ImageLike, Progress, eval_loader, expand_inputs, preprocessed_batches


def model_device(model) -> torch.device:
    """Where the model's weights are (the CPU for a model without parameters, e.g. ONNX)."""
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


def place(model, device) -> torch.device:
    """Move the model to ``device`` when one is given ("auto", "cpu", "cuda:1"); else use where it is."""
    if device is None:
        return model_device(model)
    dev = resolve_device(str(device))
    model.to(dev)
    return dev


def _encode(model, batch: torch.Tensor, device, project: bool = True) -> torch.Tensor:
    return model.encode_image(batch.to(device), normalize=True, project=project).float().cpu()


@torch.no_grad()
def embed_images(model, images, batch_size: int = 32, device=None, progress: Progress = None,
                 skip_bad: bool = False, record: Optional[Batches] = None,
                 max_pixels: Optional[int] = None) -> torch.Tensor:
    """N×D unit-norm float32 image embeddings (on the CPU), in the order of ``expand_inputs(images)``."""
    return embed_items(model, expand_inputs(images), batch_size, device, progress, skip_bad, record, max_pixels)


@torch.no_grad()
def embed_items(model, items: Sequence[Tuple[str, ImageLike]], batch_size: int = 32, device=None,
                progress: Progress = None, skip_bad: bool = False, record: Optional[Batches] = None,
                max_pixels: Optional[int] = None) -> torch.Tensor:
    """``embed_images`` of inputs already expanded to ``(name, item)`` pairs (``expand_inputs``)."""
    dev = place(model, device)
    model.eval()
    if not items:
        raise ValueError("no images given (an empty list, or a folder without image files)")
    out = [_encode(model, x, dev) for x in preprocessed_batches(items, model.cfg.preprocess, batch_size, skip_bad,
                                                                 max_pixels, progress, record)]
    return torch.cat(out) if out else torch.empty(0, model.cfg.embed_dim)


@torch.no_grad()
def extract_features(model, paths: Sequence, where: Optional[Sequence[str]] = None, project: bool = True,
                     batch_size: int = 32, device: str = "cpu", num_workers: int = 0, progress: bool = True,
                     desc: str = "features") -> torch.Tensor:
    """N×D float32 features of image files: unit-norm projected embeddings, or raw pooled trunk features
    (``project=False``). A DataLoader (``num_workers``) decodes; errors name the file and ``where``."""
    dev = resolve_device(device)
    was_training = model.training
    model.eval().to(dev)
    loader = eval_loader(model.cfg.preprocess, paths, where, batch_size, num_workers)
    out: List[torch.Tensor] = []
    for images in tqdm(loader, desc=desc, unit="batch", disable=None if progress else True, leave=False):
        out.append(_encode(model, images, dev, project))
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def encode_texts(model, texts: Sequence[str], batch_size: int = 64, device: str | torch.device = "cpu") -> torch.Tensor:
    """Unit-norm projected text embeddings, P×D (float32, on CPU)."""
    if getattr(model, "is_image_only", False):
        from ..models.errors import image_only_error

        raise image_only_error("text embeddings (zero-shot prompts)")
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        ids = model.tokenizer(list(texts[i:i + batch_size])).to(device)
        out.append(model.encode_text(ids, normalize=True, project=True).float().cpu())
    return torch.cat(out)


def embed_texts(model, texts: Union[str, Sequence[str]], batch_size: int = 64, device=None) -> torch.Tensor:
    """P×D unit-norm float32 text embeddings (on the CPU)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given")
    return encode_texts(model, texts, batch_size=batch_size, device=place(model, device))
