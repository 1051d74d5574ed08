"""Image–text retrieval recall@K in both directions on a caption set.

An image may have several captions: image→text counts a hit when any of its captions is in the top K;
text→image when the caption's own image is in the top K. Images are de-duplicated by path.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch


def recall_at_k(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: Sequence[int],
                ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """``i2t_r@k``, ``t2i_r@k`` (fractions) and median ranks (1 = best) from unit-norm features."""
    sim = (image_features.float() @ text_features.float().T).numpy()  # Ni × Nt
    t2i = np.asarray(text_to_image, dtype=int)
    n_img, n_txt = sim.shape
    if len(t2i) != n_txt:
        raise ValueError(f"text_to_image has {len(t2i)} entries for {n_txt} texts")
    # text -> image: rank of the caption's image among all images (0-based, stable for ties)
    order_t = np.argsort(-sim.T, axis=1, kind="stable")
    rank_t = np.argmax(order_t == t2i[:, None], axis=1)
    # image -> text: best rank of any of the image's captions
    order_i = np.argsort(-sim, axis=1, kind="stable")
    is_gt = t2i[order_i] == np.arange(n_img)[:, None]
    has = is_gt.any(axis=1)
    rank_i = np.where(has, np.argmax(is_gt, axis=1), n_txt)
    out: Dict[str, float] = {}
    for k in ks:
        out[f"i2t_r@{k}"] = float(np.mean(rank_i[has] < k)) if has.any() else float("nan")
        out[f"t2i_r@{k}"] = float(np.mean(rank_t < k))
    out["i2t_median_rank"] = float(np.median(rank_i[has] + 1)) if has.any() else float("nan")
    out["t2i_median_rank"] = float(np.median(rank_t + 1))
    out["n_images"], out["n_texts"] = int(n_img), int(n_txt)
    return out
