"""Segmentation transfer: one row per encoder initialisation (pretrained / random / imagenet), Dice and IoU per
class (and AUPR per label for multi-label lesion sets) as mean ± std over seeded folds; the epoch is chosen on
validation Dice (never a constant prediction), the test split predicted once. Each row carries the per-epoch
validation history of every fold and the test scores of the constant predictions it must beat."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from ..context import EvalContext, split_for_seed
from ..experiments import SEGMENTATION_TASK
from ..metrics import aggregate_folds
from ..tables import prediction_key
from ..splits import fold_seeds


def run_segmentation(ctx: EvalContext) -> List[Dict]:
    from ..segmentation_data import cached_arrays, list_pairs, load_pairs
    from ...runtime.device import usable_cores
    from ..segmentation_train import SegTask, constant_baselines, predict_masks, score, take, train_segmenter

    exp, cfg = ctx.experiment, ctx.cfg
    sc = cfg.segmentation
    if exp.task != SEGMENTATION_TASK:
        raise ValueError(f"segmentation needs a segmentation experiment (task: segmentation); {exp.name!r} is "
                         f"{exp.task}")
    task = SegTask(exp.classes, multilabel=exp.is_multilabel_segmentation)
    pairs = list_pairs(exp)
    size = sc.size or ctx.model.cfg.preprocess.size
    workers = sc.workers or usable_cores()
    if sc.cache:  # every mask is checked (once, when the cache is written) before any training
        images, masks, info = cached_arrays(pairs, exp, size, _cache_dir(ctx), cfg.progress, workers)
        ctx.notes.append(f"segmentation data: {'cache hit' if info['hit'] else 'decoded into the cache'} "
                         f"{info['folder']} ({info['bytes'] / 2**20:.0f} MiB, {info['seconds']:.1f} s)")
    else:
        images, masks = load_pairs(pairs, exp, size, cfg.progress, workers)
    seeds = fold_seeds(sc.folds or cfg.folds, cfg.seed, cfg.seeds)
    splits = [split_for_seed(pairs, s, sc.train_fraction, sc.val_fraction, cfg.test_fraction, ["image"]) for s in seeds]
    rows = []
    for init in sc.inits:
        method = _method(sc, init)
        per_fold, hparams, sizes, histories, baselines = [], [], [], [], []
        for f, split in enumerate(splits):
            seg, norm, info = train_segmenter(ctx.model, images, masks, split.train, split.val, task, sc, init,
                                              split.seed, ctx.device, cfg.progress)
            pred, probs = predict_masks(seg, norm, images, split.test, task, sc.batch_size, ctx.device,
                                        with_probs=task.multilabel)  # test touched once
            truth = take(masks, split.test)
            per_fold.append(score(pred, truth, task, probs))
            baselines.append(constant_baselines(truth, task))
            hparams.append({k: info[k] for k in ("best_epoch", "best_val_dice_mean", "selected_trivial", "stopped",
                                                 "class_weights", "trainable_encoder_tensors", "transfer")})
            histories.append(info["history"])
            sizes.append(split.sizes())
            if info["selected_trivial"]:
                ctx.note(f"segmentation {method}, fold {f}: every epoch predicted one constant mask on the "
                         f"validation split; the scores are those of a trivial prediction")
            if f == 0:
                k = min(sc.plot_images, len(split.test))
                ctx.predictions[prediction_key("segmentation", method, "fold-test")] = {
                    "images": take(images, split.test[:k]), "truth": truth[:k], "pred": pred[:k],
                    "multilabel": task.multilabel}
        agg = aggregate_folds(per_fold)
        best_constant = {name: float(np.mean([b[name] for b in baselines])) for name in baselines[0]}
        top = max(best_constant.values())
        if not agg["mean"]["dice_mean"] > top:
            ctx.note(f"segmentation {method}: test mean Dice {agg['mean']['dice_mean']:.3f} does not beat the best "
                     f"constant prediction ({top:.3f}, {max(best_constant, key=best_constant.get)})")
        rows.append({
            "model": ctx.model_name, "experiment": exp.name, "mode": "segmentation", "method": method,
            "shots": None, "split": "official-test" if pairs.official_test.any() else "fold-test",
            "folds": len(splits),
            **{f"n_{k}": int(round(np.mean([s[k] for s in sizes]))) for k in ("train", "val", "test")},
            "metrics": agg["mean"], "std": agg["std"], "ci95": {}, "hparams": hparams, "per_fold": per_fold,
            "thresholds": [], "history": histories, "constant_baselines": best_constant,
            "details": {"size": size, "init": init, "finetune": sc.finetune, "architecture": sc.architecture,
                        "multilabel": task.multilabel, "loss": sc.loss},
        })
    return rows


def _cache_dir(ctx: EvalContext):
    """``segmentation.cache_dir``, else beside the feature cache (``$FUNDUS_VLP_CACHE`` or the runs folder)."""
    from pathlib import Path

    sc = ctx.cfg.segmentation
    return Path(sc.cache_dir) if sc.cache_dir else Path(ctx.cache.directory).parent / ".segmentation_cache"


def _method(sc, init: str) -> str:
    return f"{init}/{sc.finetune}"
