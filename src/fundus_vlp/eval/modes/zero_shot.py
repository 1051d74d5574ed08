"""Zero-shot: class prototypes from prompt ensembles; no training, no folds."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from ..context import EvalContext, fold_result
from ..splits import SplitError
from ...inference.zero_shot import to_probabilities


def zero_shot_probs_all(ctx: EvalContext) -> np.ndarray:
    """N×K probabilities of every image: the cached features through the experiment's zero-shot head."""
    multilabel = ctx.experiment.task == "multilabel"
    logits = ctx.zero_shot_head(multilabel).logits(ctx.features(project=True))
    return to_probabilities(logits, multilabel).numpy()


def run_zero_shot(ctx: EvalContext) -> List[Dict]:
    """Zero-shot has no training and no folds: one row on the whole evaluation set (all images, or the
    official test set), plus the mean over the folds' test splits for comparison with few-shot rows."""
    exp = ctx.experiment
    if not exp.zero_shot:
        ctx.note(f"zero-shot skipped: experiment {exp.name} has coded class names ({exp.classes}) without text meaning")
        return []
    probs = zero_shot_probs_all(ctx)
    y = ctx.data.labels
    whole = ctx.data.official_test if ctx.data.official_test.any() else np.ones(len(y), bool)
    split_name = "official-test" if ctx.data.official_test.any() else "all"
    rows = [ctx.row("zero-shot", "zero-shot", [fold_result(ctx, y[whole], probs[whole])], split=split_name)]
    if ctx.cfg.zero_shot.on_fold_splits and exp.task != "multilabel" and not ctx.data.official_test.any():
        folds, sizes = [], []
        try:
            splits = ctx.splits(0, 0)
        except SplitError as exc:
            ctx.note(f"zero-shot on fold test splits skipped: {exc}")
            return rows
        for split in splits:
            folds.append(fold_result(ctx, y[split.test], probs[split.test]))
            sizes.append(split.sizes())
        rows.append(ctx.row("zero-shot", "zero-shot", folds, split="fold-test", sizes=sizes))
    return rows
