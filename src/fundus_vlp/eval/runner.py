"""One entry point per evaluation mode, and :func:`evaluate` that runs several and writes the run folder.

Protocol (keepfit.md §5, flair.md §9, with the fixes of keepfit.md §7 / flair.md §11):

* image features are extracted once per (model, experiment, projection) with the evaluation transform
  and cached (``features.py``); every adapter, shot count and fold reuses them;
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

import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..constants import WEIGHTS_NAME
from .adapters import ClipAdapter, TipAdapter, TipAdapterF, TrainCfg, ZeroShot, single_thread
from .config import EvalCfg
from .experiments import Experiment, LabeledImages, get_experiment, load_labeled_images
from .features import FeatureCache, model_fingerprint, resolve_device
from .linear_probe import LinearProbe
from .metrics import aggregate_folds, bootstrap_ci, choose_threshold, compute_metrics
from .report import prediction_key, write_run
from .splits import Split, SplitError, fold_seeds, make_splits
from .zero_shot import build_zero_shot_classifier, load_knowledge, multilabel_scores, negative_prototypes

_logger = logging.getLogger(__name__)


# -- context ---------------------------------------------------------------------------------------------

@dataclass
class EvalContext:
    """Everything a mode needs; features, prototypes and data are computed on first use and kept."""

    model: Any
    model_name: str
    fingerprint: str
    experiment: Experiment
    cfg: EvalCfg
    out_dir: Path
    cache: FeatureCache
    device: torch.device
    notes: List[str] = field(default_factory=list)
    predictions: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)  # fold-0 predictions for plots
    _data: Optional[LabeledImages] = None
    _features: Dict[bool, torch.Tensor] = field(default_factory=dict)
    _prototypes: Optional[torch.Tensor] = None

    @property
    def data(self) -> LabeledImages:
        if self._data is None:
            self._data = load_labeled_images(self.experiment)
            if self._data.n_dropped:
                self.note(f"{self._data.n_dropped} rows dropped: label not in the experiment's targets")
        return self._data

    @property
    def n_classes(self) -> int:
        return len(self.experiment.classes)

    @property
    def scale(self) -> float:
        return float(self.model.scale().detach())

    def note(self, text: str) -> None:
        _logger.warning(text)
        self.notes.append(text)

    def features(self, project: bool = True) -> torch.Tensor:
        if project not in self._features:
            c = self.cfg
            self._features[project] = self.cache.get(
                self.model, self.data.paths, self.data.where,
                tag=f"{self.experiment.name}-{'proj' if project else 'raw'}",
                fingerprint=self.fingerprint, project=project, batch_size=c.batch_size, device=str(self.device),
                num_workers=c.num_workers, progress=c.progress)
        return self._features[project]

    def prototypes(self) -> torch.Tensor:
        if self._prototypes is None:
            zs = self.cfg.zero_shot
            kb = load_knowledge(zs.knowledge) if zs.domain_knowledge else None
            self._prototypes = build_zero_shot_classifier(
                self.model, self.experiment.classes, zs.templates, kb,
                normalize=not self.cfg.bug_compat.unnormalised_prototypes, device=self.device)
        return self._prototypes

    def splits(self, shots_train, shots_val, n_folds: Optional[int] = None) -> List[Split]:
        c = self.cfg
        seeds = fold_seeds(n_folds or c.folds, c.seed, c.seeds if n_folds is None else None)
        return [split_for_seed(self.data, s, shots_train, shots_val, c.test_fraction, self.experiment.classes)
                for s in seeds]

    def row(self, mode: str, method: str, folds: List[Dict], shots: Optional[int] = None, split: str = "fold-test",
            hparams: Optional[List[Dict]] = None, sizes: Optional[List[Dict[str, int]]] = None) -> Dict:
        return make_row(self, mode, method, folds, shots, split, hparams, sizes)


def split_for_seed(data: LabeledImages, seed: int, shots_train, shots_val, test_fraction: float,
                   class_names: Sequence[str]) -> Split:
    """A fold's split; with an official test set, test = that set and only the rest is split."""
    if data.official_test.any():
        pool = np.flatnonzero(~data.official_test)
        groups = data.groups[pool] if data.groups is not None else None
        s = make_splits(data.labels[pool], seed, shots_train, shots_val, 0.0, groups, class_names)
        return Split(pool[s.train], pool[s.val], np.flatnonzero(data.official_test), seed)
    return make_splits(data.labels, seed, shots_train, shots_val, test_fraction, data.groups, class_names)


# -- rows -------------------------------------------------------------------------------------------------

def fold_result(ctx: EvalContext, y_test: np.ndarray, probs_test: np.ndarray,
                threshold: Optional[float] = None) -> Dict:
    exp = ctx.experiment
    return {"y_true": y_test, "probs": probs_test, "threshold": threshold, "positive": exp.positive_index,
            "task": exp.task}


def make_row(ctx: EvalContext, mode: str, method: str, folds: List[Dict], shots=None, split="fold-test",
             hparams=None, sizes=None) -> Dict:
    exp, cfg = ctx.experiment, ctx.cfg
    per_fold = [compute_metrics(f["y_true"], f["probs"], f["task"], f["threshold"], f["positive"]) for f in folds]
    agg = aggregate_folds(per_fold)
    ci_names = [m for m in cfg.ci_metrics if m in per_fold[0]]
    ci = bootstrap_ci(folds, ci_names, cfg.bootstrap, seed=cfg.seed)
    sizes = sizes or [{"test": len(f["y_true"])} for f in folds]
    row = {
        "model": ctx.model_name, "experiment": exp.name, "mode": mode, "method": method, "shots": shots,
        "split": split, "folds": len(folds),
        **{f"n_{k}": int(round(np.mean([s.get(k, 0) for s in sizes]))) for k in ("train", "val", "test")},
        "metrics": agg["mean"], "std": agg["std"], "ci95": ci, "hparams": hparams or [], "per_fold": per_fold,
        "thresholds": [f["threshold"] for f in folds] if exp.task == "binary" else [],
    }
    ctx.predictions[prediction_key(mode, method, split, shots)] = folds[0]
    return row


def _threshold(ctx: EvalContext, y_val: np.ndarray, probs_val: np.ndarray) -> Optional[float]:
    """Binary decision threshold from validation labels only (keepfit.md §5.4 fix)."""
    if ctx.experiment.task != "binary" or ctx.cfg.binary_threshold != "val" or len(y_val) == 0:
        return None
    return choose_threshold(y_val, probs_val, ctx.experiment.positive_index)


# -- zero-shot --------------------------------------------------------------------------------------------

def zero_shot_probs_all(ctx: EvalContext) -> np.ndarray:
    X = ctx.features(project=True)
    if ctx.experiment.task == "multilabel":
        neg = negative_prototypes(ctx.model, ctx.experiment.classes, ctx.cfg.zero_shot.negative_templates,
                                  not ctx.cfg.bug_compat.unnormalised_prototypes, ctx.device)
        return multilabel_scores(X, ctx.prototypes(), neg, ctx.scale).numpy()
    return ZeroShot(ctx.prototypes(), ctx.scale).predict_proba(X)


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


# -- few-shot ---------------------------------------------------------------------------------------------

def fit_predict_few_shot(method: str, X: torch.Tensor, y: np.ndarray, split: Split, prototypes: torch.Tensor,
                         scale: float, cfg: EvalCfg, n_classes: int) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """Fit ``method`` on the train split, choose its hyper-parameters on the val split, predict val and test.

    Only ``y[split.train]`` and ``y[split.val]`` are read: test labels cannot influence anything here.
    """
    with single_thread():
        return _fit_predict_few_shot(method, X, y, split, prototypes, scale, cfg, n_classes)


def _fit_predict_few_shot(method, X, y, split, prototypes, scale, cfg, n_classes):
    fs = cfg.few_shot
    Xtr, ytr = X[split.train], y[split.train]
    Xv, yv = X[split.val], y[split.val]
    Xte = X[split.test]
    train = TrainCfg(**{f.name: getattr(fs, f.name) for f in fields(TrainCfg) if f.name != "seed"}, seed=split.seed)
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
    else:
        raise ValueError(f"unknown few-shot method {method!r}")
    return model.predict_proba(Xv), model.predict_proba(Xte), dict(model.hparams)


def run_few_shot(ctx: EvalContext) -> List[Dict]:
    _require_single_label(ctx, "few-shot")
    fs = ctx.cfg.few_shot
    X, y = ctx.features(project=True), ctx.data.labels
    protos, scale = ctx.prototypes(), ctx.scale
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
                folds.append(fold_result(ctx, y[split.test], pt, _threshold(ctx, y[split.val], pv)))
                hps.append(hp)
            rows.append(ctx.row("few-shot", method, folds, shots=int(k), hparams=hps,
                                sizes=[s.sizes() for s in splits]))
    return rows


# -- linear probe -----------------------------------------------------------------------------------------

def run_linear_probe(ctx: EvalContext) -> List[Dict]:
    _require_single_label(ctx, "linear-probe")
    lp = ctx.cfg.linear_probe
    X, y = ctx.features(project=lp.project_features).numpy(), ctx.data.labels
    folds, hps, sizes = [], [], []
    for split in ctx.splits(lp.train_fraction, lp.val_fraction):
        probe = LinearProbe.from_cfg(lp, ctx.n_classes, refit_on_train_val=lp.refit_on_train_val)
        probe.fit(X[split.train], y[split.train], X[split.val], y[split.val])
        pv = probe.predict_proba(X[split.val])
        folds.append(fold_result(ctx, y[split.test], probe.predict_proba(X[split.test]),
                                 _threshold(ctx, y[split.val], pv)))
        hps.append(probe.hparams)
        sizes.append(split.sizes())
    method = "linear_probe" + ("" if lp.project_features else "_raw")
    return [ctx.row("linear-probe", method, folds, hparams=hps, sizes=sizes)]


# -- fine-tune --------------------------------------------------------------------------------------------

def run_finetune(ctx: EvalContext) -> List[Dict]:
    from .finetune import finetune, predict

    _require_single_label(ctx, "fine-tune")
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
        folds.append(fold_result(ctx, y[split.test], pt, _threshold(ctx, y[split.val], pv)))
        hps.append({"best_epoch": info["best_epoch"], "best_val_f1_macro": info["best_val_f1_macro"]})
        sizes.append(split.sizes())
    return [ctx.row("fine-tune", ft.mode, folds, hparams=hps, sizes=sizes)]


# -- retrieval / captioning -------------------------------------------------------------------------------

def run_retrieval(ctx: EvalContext) -> List[Dict]:
    from ..data.dataframes import read_captions, resolve_image_path
    from .experiments import check_images_exist
    from .retrieval import recall_at_k
    from .zero_shot import encode_texts

    rc, exp = ctx.cfg.retrieval, ctx.experiment
    csv = rc.captions or exp.captions
    root = rc.image_root or exp.captions_root or exp.image_root
    if not csv or not root:
        raise ValueError(f"retrieval needs a caption CSV and its image root: set retrieval.captions=FILE and "
                         f"retrieval.image_root=DIR (experiment {exp.name} defines none)")
    frame = read_captions(csv)
    uniq = list(dict.fromkeys(frame["image"]))
    index = {p: i for i, p in enumerate(uniq)}
    first_row = {p: int(r) for p, r in zip(frame["image"][::-1], frame["row"][::-1])}
    paths = [resolve_image_path(root, p, csv, first_row[p]) for p in uniq]
    where = [f"{csv}, row {first_row[p]}" for p in uniq]
    check_images_exist(paths, where, root)
    img = ctx.cache.get(ctx.model, paths, where, tag=f"{exp.name}-captions", fingerprint=ctx.fingerprint,
                        project=True, batch_size=ctx.cfg.batch_size, device=str(ctx.device),
                        num_workers=ctx.cfg.num_workers, progress=ctx.cfg.progress)
    txt = encode_texts(ctx.model, list(frame["caption"]), device=ctx.device)
    metrics = recall_at_k(img, txt, [index[p] for p in frame["image"]], rc.ks)
    rows = [_plain_row(ctx, "retrieval", "recall@k", metrics, n_test=len(frame))]
    if rc.captioning and getattr(ctx.model, "decoder", None) is not None:
        refs: Dict[str, List[str]] = {}
        for p, c in zip(frame["image"], frame["caption"]):
            refs.setdefault(p, []).append(c)
        rows.append(_plain_row(ctx, "retrieval", "captioning", caption_scores(ctx, uniq, paths, where, refs),
                               n_test=len(uniq)))
    elif rc.captioning:
        ctx.note("captioning metrics skipped: the model has no caption decoder")
    return rows


def caption_scores(ctx: EvalContext, ids: List[str], paths, where, refs: Dict[str, List[str]]) -> Dict:
    from .captioning import caption_metrics
    from .features import eval_loader

    rc, model = ctx.cfg.retrieval, ctx.model
    loader = eval_loader(model.cfg.preprocess, paths, where, ctx.cfg.batch_size, ctx.cfg.num_workers)
    generated: List[str] = []
    model.eval()
    for images in loader:
        ids_out = model.generate(images.to(ctx.device), max_length=rc.max_length, num_beams=rc.num_beams)
        generated += model.tokenizer.batch_decode(ids_out.cpu())
    scores = caption_metrics({i: refs[i] for i in ids}, dict(zip(ids, generated)))
    if scores.get("notes"):
        ctx.note(str(scores["notes"]))
    scores["examples"] = [{"image": i, "generated": g, "reference": refs[i][0]} for i, g in zip(ids[:5], generated)]
    return scores


def _plain_row(ctx: EvalContext, mode: str, method: str, metrics: Dict, n_test: int) -> Dict:
    nums = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    extra = {k: v for k, v in metrics.items() if k not in nums}
    return {"model": ctx.model_name, "experiment": ctx.experiment.name, "mode": mode, "method": method, "shots": None,
            "split": "all", "folds": 1, "n_train": 0, "n_val": 0, "n_test": n_test, "metrics": nums, "std": {},
            "ci95": {}, "hparams": [], "per_fold": [], "thresholds": [], **({"details": extra} if extra else {})}


def _require_single_label(ctx: EvalContext, mode: str) -> None:
    if ctx.experiment.task == "multilabel":
        raise ValueError(f"{mode} supports single-label experiments; {ctx.experiment.name} is multi-label "
                         f"(use zero-shot)")


RUNNERS: Dict[str, Callable[[EvalContext], List[Dict]]] = {
    "zero-shot": run_zero_shot,
    "few-shot": run_few_shot,
    "linear-probe": run_linear_probe,
    "fine-tune": run_finetune,
    "retrieval": run_retrieval,
}


# -- entry point ------------------------------------------------------------------------------------------

def load_model(model_or_dir) -> Tuple[Any, Optional[Path], str]:
    """(model, weights file or None, display name) from a model object or a saved folder."""
    if isinstance(model_or_dir, (str, Path)):
        from ..hub import from_pretrained

        directory = Path(model_or_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"model folder not found: {directory}")
        # runs/<run>/model -> "<run>": the exported folder of a pretraining run is always called "model"
        name = directory.resolve().parent.name if directory.name == "model" else directory.name
        return from_pretrained(directory), directory / WEIGHTS_NAME, name
    return model_or_dir, None, getattr(model_or_dir, "name", None) or model_or_dir.cfg.name


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


def evaluate(model_or_dir, experiment: str | Experiment, modes: Optional[Sequence[str]] = None,
             cfg: Optional[EvalCfg] = None, model_name: Optional[str] = None) -> Dict[str, Any]:
    """Evaluate a model on an experiment; writes ``results.json``, ``config.yaml``, plots and ``table.txt``.

    Args:
        model_or_dir: a ``FundusCLIP`` or a saved model folder.
        experiment: an :class:`Experiment`, a built-in name, a YAML path or ``demo:<name>``.
        modes: subset of ``zero-shot, few-shot, linear-probe, fine-tune, retrieval`` (default ``cfg.modes``).
    Returns the results dict (``rows`` as documented in this module).
    """
    cfg = cfg or EvalCfg()
    cfg = replace(cfg, modes=list(modes or cfg.modes))  # EvalCfg validates the modes, before any loading
    modes = cfg.modes
    model, weights, name = load_model(model_or_dir)
    exp = experiment if isinstance(experiment, Experiment) else get_experiment(
        experiment, cfg.dataframe_dir, cfg.image_root, cfg.demo, cfg.demo_cache_dir)
    out_dir = run_dir(cfg, exp, modes)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model.to(device).eval()
    cfg = replace(cfg, experiment=exp.name if isinstance(experiment, Experiment) else experiment,
                  model=str(model_or_dir) if isinstance(model_or_dir, (str, Path)) else cfg.model)
    ctx = EvalContext(model, model_name or name, model_fingerprint(model, weights), exp, cfg, out_dir,
                      FeatureCache(feature_cache_dir(cfg, out_dir)), device)
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
    return results


PROTOCOL_NOTE = ("folds are repeated seeded stratified splits (Monte-Carlo; test sets of different folds overlap); "
                 "hyper-parameters, thresholds and model selection use validation data only; std is the population "
                 "std (ddof=0) over folds; ci95 is a percentile bootstrap over test samples of the fold mean; "
                 "zero-shot has no folds")
