"""Search over a folder of images: ``fundus_vlp.search(model, folder, query, k=10)`` with a text query, or an image
query (a path to an image file, a PIL image or an H×W×3 array: image-only models search this way).

The folder's image embeddings are computed once and kept in the feature cache
(``inference/features.py``): the key covers the model weights, every file's path, size and modification
time and the preprocessing, so adding, replacing or touching an image recomputes them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..data.dataframes import IMAGE_EXTENSIONS
from ..runtime.sources import cache_root
from .embedding import embed_images, embed_texts, model_device
from .features import FeatureCache, model_fingerprint
from .inputs import list_images


def search_cache_dir() -> Path:
    """``$FUNDUS_VLP_CACHE/features``, else ``~/.cache/fundus_vlp/features`` (never inside the image folder)."""
    return cache_root() / "features"


def is_image_file(query) -> bool:
    return isinstance(query, (str, Path)) and Path(query).suffix.lower() in IMAGE_EXTENSIONS and Path(query).is_file()


def search(model, folder: str | Path, query: str, k: int = 10, cache_dir: Optional[str | Path] = None,
           batch_size: int = 32, device=None, progress: Optional[bool] = None):
    """The ``k`` images of ``folder`` closest to ``query``: a DataFrame (rank 1..k) with ``image`` and ``score``
    (cosine similarity of unit embeddings, highest first). ``cache_dir=False`` disables the cache."""
    import pandas as pd

    image_query = not isinstance(query, str) or is_image_file(query)
    if not image_query and not query.strip():
        raise ValueError("search needs a non-empty query text (or an image)")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    dev = str(device) if device is not None else str(model_device(model))
    cache = FeatureCache(None if cache_dir is False else (cache_dir or search_cache_dir()))
    feats = cache.get(model, paths, tag=f"search-{Path(folder).resolve().name}", fingerprint=model_fingerprint(model),
                      batch_size=batch_size, device=dev, progress=progress if progress is not None else len(paths) >= 64)
    target = embed_images(model, [query], device=dev)[0] if image_query else embed_texts(model, [query], device=dev)[0]
    scores = feats.float() @ target.float()
    top = torch.topk(scores, min(k, len(paths)))
    frame = pd.DataFrame({"image": [str(paths[i]) for i in top.indices.tolist()],
                          "score": top.values.double().numpy()})
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="rank")
    frame.attrs["cache_hit"] = cache.hits > 0  # lets callers (and tests) see whether embeddings were reused
    return frame
