"""Linear probe: logistic regression on frozen features, C chosen on validation."""
from __future__ import annotations

from typing import Dict, List

from ..context import EvalContext, fold_result, require_single_label, val_threshold
from ..linear_probe import LinearProbe


def run_linear_probe(ctx: EvalContext) -> List[Dict]:
    require_single_label(ctx, "linear-probe")
    lp = ctx.cfg.linear_probe
    X, y = ctx.features(project=lp.project_features).numpy(), ctx.data.labels
    folds, hps, sizes = [], [], []
    for split in ctx.splits(lp.train_fraction, lp.val_fraction):
        probe = LinearProbe.from_cfg(lp, ctx.n_classes, refit_on_train_val=lp.refit_on_train_val)
        probe.fit(X[split.train], y[split.train], X[split.val], y[split.val])
        pv = probe.predict_proba(X[split.val])
        folds.append(fold_result(ctx, y[split.test], probe.predict_proba(X[split.test]),
                                 val_threshold(ctx, y[split.val], pv)))
        hps.append(probe.hparams)
        sizes.append(split.sizes())
    method = "linear_probe" + ("" if lp.project_features else "_raw")
    return [ctx.row("linear-probe", method, folds, hparams=hps, sizes=sizes)]
