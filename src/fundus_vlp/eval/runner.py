"""``evaluate``: run several evaluation modes (``eval/modes/``) on one model and experiment; write the run folder.

Protocol (docs/reference.md#evaluation-protocol, with the fixes of docs/reference.md#official-bugs):

* image features are extracted once per (model, experiment, projection) with the evaluation transform
  and cached (``inference/features.py``); every adapter, shot count and fold reuses them;
* folds are repeated seeded stratified splits (fold f: seed + f); the test split of a seed does not depend
  on the shot count or the mode, so few-shot, linear-probe and zero-shot-on-splits rows share test sets;
* every hyper-parameter (adapter α/β/ratio, probe C, binary threshold, fine-tuning epoch) is chosen on
  the validation split; test labels are only read to compute the final metrics;
* zero-shot has no folds: it is reported once on the whole evaluation set (all images, or the official
  test set) and, for comparison, averaged over the folds' test splits.

Result rows (``results["rows"]``) are flat dicts::

    {"model", "experiment", "mode", "method", "shots", "split", "folds", "n_train", "n_val", "n_test",
     "metrics": {name: mean}, "std": {name: std over folds (ddof=0)}, "ci95": {name: [lo, hi]},
     "hparams": [per-fold choices], "per_fold": [per-fold metrics]}
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..inference.features import FeatureCache, model_fingerprint
from ..inference.loading import load_model
from ..runtime.device import resolve_device
from .config import EXPERIMENT_FREE_MODES, IMAGE_ONLY_FEW_SHOT, TEXT_MODES, EvalCfg
from .context import EvalContext
from .experiments import SEGMENTATION_TASK, Experiment, get_experiment
from .modes import RUNNERS
from .modes.report import report_experiment
from .tables import write_run
from .splits import fold_seeds


def feature_cache_dir(cfg: EvalCfg, out_dir: Path) -> Path:
    """``cache_dir``; else ``$FUNDUS_VLP_CACHE/features``; else ``<output_dir>/.feature_cache`` for an explicit
    output_dir, or ``runs/eval/.feature_cache`` (shared by the timestamped default run folders)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    return FeatureCache.default_dir(out_dir if cfg.output_dir else out_dir.parent)


def run_dir(cfg: EvalCfg, experiment: Experiment, modes: Sequence[str]) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    tag = "+".join(modes) if len(modes) <= 2 else "all"
    return Path("runs") / "eval" / f"{experiment.name}-{tag}-{stamp}"


def evaluate(model_or_dir, experiment: Optional[str | Experiment], modes: Optional[Sequence[str]] = None,
             cfg: Optional[EvalCfg] = None, model_name: Optional[str] = None,
             fingerprint: Optional[str] = None) -> Dict[str, Any]:
    """Evaluate a model on an experiment; writes ``results.json``, ``config.yaml``, plots and ``table.txt``.

    Args:
        model_or_dir: a ``FundusCLIP`` or a saved model folder.
        experiment: an :class:`Experiment`, a built-in name, a YAML path or ``demo:<name>``.
        modes: subset of ``zero-shot, few-shot, linear-probe, fine-tune, retrieval, report`` (default
            ``cfg.modes``), or ``segmentation`` for a segmentation experiment. ``report`` reads
            ``cfg.report.annotations``; with only it, ``experiment`` may be None.
        fingerprint: the model's weights fingerprint when already known (``features.model_fingerprint``).
    Returns the results dict (``rows`` as documented in this module) and, in memory only (not in
    ``results.json``), ``fold_predictions``: per row key (``tables.prediction_key``) the test labels and
    probabilities of every fold, for paired comparisons between models.
    """
    cfg = cfg or EvalCfg()
    cfg = replace(cfg, modes=list(modes or cfg.modes))  # EvalCfg validates the modes, before any loading
    modes = cfg.modes
    if experiment is None and not set(modes) <= set(EXPERIMENT_FREE_MODES):
        raise ValueError(f"modes {[m for m in modes if m not in EXPERIMENT_FREE_MODES]} need an experiment")
    model, weights, name = load_model(model_or_dir)
    cfg, skipped = fit_image_only(model, cfg)
    modes = cfg.modes
    if experiment is None:
        exp = report_experiment(cfg)
    elif isinstance(experiment, Experiment):
        exp = experiment
    else:
        exp = get_experiment(experiment, cfg.dataframe_dir, cfg.image_root, cfg.demo, cfg.demo_cache_dir)
    check_modes_fit(exp, modes)
    out_dir = run_dir(cfg, exp, modes)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model.to(device).eval()
    cfg = replace(cfg, experiment=experiment if isinstance(experiment, str) else exp.name,
                  model=str(model_or_dir) if isinstance(model_or_dir, (str, Path)) else cfg.model)
    ctx = EvalContext(model, model_name or name, fingerprint or model_fingerprint(model, weights), exp, cfg, out_dir,
                      FeatureCache(feature_cache_dir(cfg, out_dir)), device)
    for text in skipped:
        ctx.note(text)
    rows: List[Dict] = []
    timing: Dict[str, float] = {}
    for mode in modes:
        t0 = time.perf_counter()
        rows += RUNNERS[mode](ctx)
        timing[mode] = round(time.perf_counter() - t0, 3)
    results = {
        "model": ctx.model_name, "model_fingerprint": ctx.fingerprint, "experiment": asdict(exp), "modes": modes,
        "rows": rows, "notes": ctx.notes, "timing_s": timing, "protocol": PROTOCOL_NOTE,
        "fold_seeds": fold_seeds(cfg.folds, cfg.seed, cfg.seeds), "run_dir": str(out_dir),
        "feature_cache": {"dir": str(ctx.cache.directory), "hits": ctx.cache.hits, "misses": ctx.cache.misses},
    }
    write_run(ctx, results)
    results["fold_predictions"] = ctx.fold_predictions
    return results


class ImageOnlyError(ValueError):
    """Only modes that need a text tower were asked of a model without one."""


def is_image_only(model) -> bool:
    return bool(getattr(model, "is_image_only", False))


def fit_image_only(model, cfg: EvalCfg) -> Tuple[EvalCfg, List[str]]:
    """(cfg, notes): an image-only model runs every mode and few-shot adapter that needs no text; those that do
    (zero-shot, image-text retrieval, adapters built on prompt prototypes) are skipped with a note in a combined
    run, and refused with an error when nothing else was asked."""
    if not is_image_only(model):
        return cfg, []
    few = "few-shot" in cfg.modes
    text_methods = [m for m in cfg.few_shot.methods if m not in IMAGE_ONLY_FEW_SHOT] if few else []
    methods = [m for m in cfg.few_shot.methods if m in IMAGE_ONLY_FEW_SHOT]
    skipped = [m for m in cfg.modes if m in TEXT_MODES] + ([f"few-shot {m}" for m in text_methods] if methods else
                                                           ["few-shot " + "/".join(text_methods)] if few else [])
    modes = [m for m in cfg.modes if m not in TEXT_MODES and (m != "few-shot" or methods)]
    if not modes:
        raise ImageOnlyError(f"image-only model: {', '.join(skipped)} need(s) a text tower, which this model does not "
                             f"have; it runs linear-probe, fine-tune, segmentation, report and few-shot with "
                             f"few_shot.methods={list(IMAGE_ONLY_FEW_SHOT)}")
    notes = [f"{what}: image-only model: skipped" for what in skipped]
    return replace(cfg, modes=modes, few_shot=replace(cfg.few_shot, methods=methods or cfg.few_shot.methods)), notes


def check_modes_fit(exp: Experiment, modes: Sequence[str]) -> None:
    """Segmentation experiments run the segmentation mode only, and the segmentation mode needs one."""
    if exp.task == SEGMENTATION_TASK and any(m != "segmentation" for m in modes):
        raise ValueError(f"experiment {exp.name!r} is a segmentation experiment: run `eval segmentation` on it "
                         f"(not {', '.join(m for m in modes if m != 'segmentation')})")
    if exp.task != SEGMENTATION_TASK and "segmentation" in modes:
        raise ValueError(f"eval segmentation needs a segmentation experiment (task: segmentation, e.g. "
                         f"demo:demo_segmentation); {exp.name!r} is a {exp.task} experiment")


PROTOCOL_NOTE = ("folds are repeated seeded stratified splits (Monte-Carlo; test sets of different folds overlap); "
                 "hyper-parameters, thresholds and model selection use validation data only; std is the population "
                 "std (ddof=0) over folds; ci95 is a percentile bootstrap over test samples of the fold mean; "
                 "zero-shot has no folds")
