"""What every evaluation mode shares: the context (model, experiment, cached features and prototypes),
fold splits, and result rows with metrics aggregated over folds."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .config import EvalCfg
from .experiments import Experiment, LabeledImages, load_labeled_images
from .metrics import aggregate_folds, bootstrap_ci, choose_threshold, compute_metrics
from .tables import prediction_key
from .splits import Split, fold_seeds, make_splits
from ..inference.features import FeatureCache
from ..inference.zero_shot import ZeroShotHead, build_head

_logger = logging.getLogger(__name__)


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
    fold_predictions: Dict[str, List[Dict]] = field(default_factory=dict)  # every fold's test predictions per row
    _data: Optional[LabeledImages] = None
    _features: Dict[bool, torch.Tensor] = field(default_factory=dict)
    _heads: Dict[bool, ZeroShotHead] = field(default_factory=dict)

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
        return float(self.model.zero_shot_scale().detach())

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

    def zero_shot_head(self, multilabel: bool = False) -> ZeroShotHead:
        """The experiment's zero-shot head (``inference.zero_shot.build_head``): class display names of the
        configured knowledge base in every template, its descriptions when ``domain_knowledge``."""
        if multilabel not in self._heads:
            zs = self.cfg.zero_shot
            self._heads[multilabel] = build_head(
                self.model, self.experiment.classes, zs.knowledge, multilabel, zs.templates, zs.negative_templates,
                descriptions=zs.domain_knowledge, normalize=not self.cfg.bug_compat.unnormalised_prototypes,
                device=self.device)
        return self._heads[multilabel]

    def prototypes(self) -> torch.Tensor:
        """K×D class prototypes of the zero-shot head (the few-shot adapters start from them)."""
        return self.zero_shot_head(self.experiment.task == "multilabel").positive

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
    ctx.fold_predictions[prediction_key(mode, method, split, shots)] = folds
    return row


def val_threshold(ctx: EvalContext, y_val: np.ndarray, probs_val: np.ndarray) -> Optional[float]:
    """Binary decision threshold from validation labels only (KeepFIT tuned it on the test set)."""
    if ctx.experiment.task != "binary" or ctx.cfg.binary_threshold != "val" or len(y_val) == 0:
        return None
    return choose_threshold(y_val, probs_val, ctx.experiment.positive_index)


def require_single_label(ctx: EvalContext, mode: str) -> None:
    if ctx.experiment.task == "multilabel":
        raise ValueError(f"{mode} supports single-label experiments; {ctx.experiment.name} is multi-label "
                         f"(use zero-shot)")


def plain_row(ctx: EvalContext, mode: str, method: str, metrics: Dict, n_test: int) -> Dict:
    nums = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    extra = {k: v for k, v in metrics.items() if k not in nums}
    return {"model": ctx.model_name, "experiment": ctx.experiment.name, "mode": mode, "method": method, "shots": None,
            "split": "all", "folds": 1, "n_train": 0, "n_val": 0, "n_test": n_test, "metrics": nums, "std": {},
            "ci95": {}, "hparams": [], "per_fold": [], "thresholds": [], **({"details": extra} if extra else {})}
