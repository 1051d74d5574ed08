"""Segmentation transfer: one row per encoder initialisation (pretrained / random / imagenet), Dice and IoU per
class as mean ± std over seeded folds; the epoch is chosen on validation Dice, the test split predicted once."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from ..context import EvalContext, split_for_seed
from ..experiments import SEGMENTATION_TASK
from ..metrics import aggregate_folds
from ..tables import prediction_key
from ..splits import fold_seeds


def run_segmentation(ctx: EvalContext) -> List[Dict]:
    from ..segmentation import predict_masks, score, train_segmenter
    from ..segmentation_data import list_pairs, load_pairs

    exp, cfg = ctx.experiment, ctx.cfg
    sc = cfg.segmentation
    if exp.task != SEGMENTATION_TASK:
        raise ValueError(f"segmentation needs a segmentation experiment (task: segmentation); {exp.name!r} is "
                         f"{exp.task}")
    pairs = list_pairs(exp)
    size = sc.size or ctx.model.cfg.preprocess.size
    images, masks = load_pairs(pairs, exp, size, cfg.progress)  # every mask is checked before any training
    seeds = fold_seeds(sc.folds or cfg.folds, cfg.seed, cfg.seeds)
    splits = [split_for_seed(pairs, s, sc.train_fraction, sc.val_fraction, cfg.test_fraction, ["image"]) for s in seeds]
    rows = []
    for init in sc.inits:
        per_fold, hparams, sizes = [], [], []
        for f, split in enumerate(splits):
            seg, norm, info = train_segmenter(ctx.model, images, masks, split.train, split.val, exp.classes, sc, init,
                                              split.seed, ctx.device, cfg.progress)
            pred = predict_masks(seg, norm, images[split.test], sc.batch_size, ctx.device)  # test touched once
            per_fold.append(score(pred, masks[split.test], exp.classes))
            hparams.append({k: info[k] for k in ("best_epoch", "best_val_dice_mean", "trainable_encoder_tensors",
                                                 "transfer")})
            sizes.append(split.sizes())
            if f == 0:
                k = min(sc.plot_images, len(split.test))
                ctx.predictions[prediction_key("segmentation", _method(sc, init), "fold-test")] = {
                    "images": images[split.test[:k]], "truth": masks[split.test[:k]], "pred": pred[:k]}
        agg = aggregate_folds(per_fold)
        rows.append({
            "model": ctx.model_name, "experiment": exp.name, "mode": "segmentation", "method": _method(sc, init),
            "shots": None, "split": "official-test" if pairs.official_test.any() else "fold-test",
            "folds": len(splits),
            **{f"n_{k}": int(round(np.mean([s[k] for s in sizes]))) for k in ("train", "val", "test")},
            "metrics": agg["mean"], "std": agg["std"], "ci95": {}, "hparams": hparams, "per_fold": per_fold,
            "thresholds": [], "details": {"size": size, "init": init, "finetune": sc.finetune,
                                          "architecture": sc.architecture},
        })
    return rows


def _method(sc, init: str) -> str:
    return f"{init}/{sc.finetune}"
