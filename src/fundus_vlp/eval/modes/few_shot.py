"""Few-shot adapters on k shots per class: CLIP-Adapter, Tip-Adapter, Tip-Adapter-F (they start from the
zero-shot prompt prototypes) and linear probe, class prototypes, k nearest neighbours (image features only)."""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..adapters import ClassPrototypes, ClipAdapter, NearestNeighbours, TipAdapter, TipAdapterF, single_thread
from ..config import IMAGE_ONLY_FEW_SHOT, EvalCfg
from ..context import EvalContext, fold_result, require_single_label, val_threshold
from ..linear_probe import LinearProbe
from ..splits import Split, SplitError


def fit_predict_few_shot(method: str, X: torch.Tensor, y: np.ndarray, split: Split, prototypes: Optional[torch.Tensor],
                         scale: Optional[float], cfg: EvalCfg, n_classes: int) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """Fit ``method`` on the train split, choose its hyper-parameters on the val split, predict val and test.

    Only ``y[split.train]`` and ``y[split.val]`` are read: test labels cannot influence anything here.
    ``prototypes``/``scale`` (zero-shot prompt prototypes, logit scale) are None for an image-only model.
    """
    with single_thread():
        return _fit_predict_few_shot(method, X, y, split, prototypes, scale, cfg, n_classes)


def _fit_predict_few_shot(method, X, y, split, prototypes, scale, cfg, n_classes):
    fs = cfg.few_shot
    Xtr, ytr = X[split.train], y[split.train]
    Xv, yv = X[split.val], y[split.val]
    Xte = X[split.test]
    train = replace(fs.optim, seed=split.seed)
    if method == "clip_adapter":
        model = ClipAdapter(prototypes, scale, fs.clip_adapter_reduction).fit(Xtr, ytr, Xv, yv,
                                                                             fs.clip_adapter_ratios, train)
    elif method == "tip_adapter":
        model = TipAdapter(prototypes, scale).fit(Xtr, ytr, Xv, yv, fs.alphas, fs.betas)
    elif method == "tip_adapter_f":
        model = TipAdapterF(prototypes, scale).fit(Xtr, ytr, Xv, yv, fs.alphas, fs.betas, train,
                                                  fs.tip_f_init_alpha, fs.tip_f_init_beta)
    elif method == "linear_probe":
        model = LinearProbe.from_cfg(cfg.linear_probe, n_classes).fit(Xtr.numpy(), ytr, Xv.numpy(), yv)
    elif method == "prototype":
        model = ClassPrototypes(n_classes).fit(Xtr, ytr, Xv, yv, fs.temperatures)
    elif method == "knn":
        model = NearestNeighbours(n_classes).fit(Xtr.numpy(), ytr, Xv.numpy(), yv, fs.neighbours)
    else:
        raise ValueError(f"unknown few-shot method {method!r}")
    return model.predict_proba(Xv), model.predict_proba(Xte), dict(model.hparams)


def run_few_shot(ctx: EvalContext) -> List[Dict]:
    require_single_label(ctx, "few-shot")
    fs = ctx.cfg.few_shot
    X, y = ctx.features(project=True), ctx.data.labels
    needs_text = any(m not in IMAGE_ONLY_FEW_SHOT for m in fs.methods)
    protos, scale = (ctx.prototypes(), ctx.scale) if needs_text else (None, None)
    rows = []
    for k in fs.shots:
        try:
            splits = ctx.splits(int(k), int(fs.val_shots or k))
        except SplitError as exc:
            ctx.note(f"few-shot {k} shots skipped: {exc}")
            continue
        for method in fs.methods:
            folds, hps = [], []
            for split in splits:
                pv, pt, hp = fit_predict_few_shot(method, X, y, split, protos, scale, ctx.cfg, ctx.n_classes)
                folds.append(fold_result(ctx, y[split.test], pt, val_threshold(ctx, y[split.val], pv)))
                hps.append(hp)
            rows.append(ctx.row("few-shot", method, folds, shots=int(k), hparams=hps,
                                sizes=[s.sizes() for s in splits]))
    return rows
