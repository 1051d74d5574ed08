"""Fine-tuning the image tower with a classification head, the epoch chosen on validation."""
from __future__ import annotations

from typing import Dict, List

from ..context import EvalContext, fold_result, require_single_label, val_threshold
from ..linear_probe import LinearProbe


def run_finetune(ctx: EvalContext) -> List[Dict]:
    from ..finetune import finetune, predict

    require_single_label(ctx, "fine-tune")
    ft = ctx.cfg.finetune
    data, y = ctx.data, ctx.data.labels
    folds, hps, sizes = [], [], []
    for split in ctx.splits(ft.train_fraction, ft.val_fraction, n_folds=ft.folds):
        head = None
        if ft.mode == "lp_ft":
            X = ctx.features(project=ft.project_features).numpy()
            probe = LinearProbe.from_cfg(ctx.cfg.linear_probe, ctx.n_classes).fit(X[split.train], y[split.train],
                                                                                  X[split.val], y[split.val])
            head = probe.torch_head()
        clf, info = finetune(ctx.model, data.paths, data.where, y, split.train, split.val, ctx.n_classes, ft,
                             split.seed, ctx.cfg.num_workers, str(ctx.device), head, ctx.cfg.progress)
        pre = ctx.model.cfg.preprocess
        sel = lambda idx: ([data.paths[i] for i in idx], [data.where[i] for i in idx])  # noqa: E731
        pv = info["val_probs"]
        if pv is None:  # no epoch ran: the initial weights were selected
            pv = predict(clf, *sel(split.val), pre, ft.batch_size, ctx.device, ctx.cfg.num_workers)
        pt = predict(clf, *sel(split.test), pre, ft.batch_size, ctx.device, ctx.cfg.num_workers)  # test touched once
        folds.append(fold_result(ctx, y[split.test], pt, val_threshold(ctx, y[split.val], pv)))
        hps.append({"best_epoch": info["best_epoch"], "best_val_f1_macro": info["best_val_f1_macro"]})
        sizes.append(split.sizes())
    return [ctx.row("fine-tune", ft.mode, folds, hparams=hps, sizes=sizes)]
