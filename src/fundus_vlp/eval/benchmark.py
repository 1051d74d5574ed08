"""``benchmark``: several models on the same experiments, folds and splits, compared with paired statistics.

Every model runs the ordinary evaluation (``runner.evaluate``) with one shared ``EvalCfg``: the folds are the
same seeded splits of the same labels, so fold ``f`` tests every model on the same images, which is what the
paired comparisons of ``benchmark_report`` need. Each model embeds images with its own preprocessing (its
config) through one shared feature cache, keyed by the model's weights.

A *cell* is one model × experiment × mode. Its rows and every fold's test predictions are written atomically
to ``<out>/cells/`` as soon as it finishes; a re-run (after an interruption, or with a model or experiment
added) reads the cells whose key (weights fingerprint, experiment, mode, evaluation settings) is unchanged and
computes only the rest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
from tqdm.auto import tqdm

from ..hub import resolve_model_dir
from ..runtime.files import write_text_atomic
from .config import EvalCfg, FewShotCfg
from ..inference.features import model_fingerprint
from ..inference.loading import load_model
from .runner import ImageOnlyError, is_image_only

_logger = logging.getLogger(__name__)

BENCHMARK_MODES = ("zero-shot", "few-shot", "linear-probe", "fine-tune")  # the modes with fold rows to compare
CELL_FORMAT = 1
# EvalCfg fields that do not change a cell's results
_RUN_ONLY = ("model", "experiment", "modes", "output_dir", "cache_dir", "plots", "progress", "print_table",
             "num_workers", "device", "batch_size")


@dataclass
class BenchmarkCfg:
    models: List[str] = field(default_factory=list)  # model folders (or pretraining run folders)
    experiments: List[str] = field(default_factory=list)  # built-in names, YAML files or demo:<name>
    modes: List[str] = field(default_factory=lambda: ["zero-shot", "few-shot", "linear-probe"])
    reference: Optional[str] = None  # the model every other is compared with (default: the first)
    metrics: List[str] = field(default_factory=lambda: ["aca", "auc"])  # compared and tabulated
    n_boot: int = 2000  # paired bootstrap replicates
    level: float = 0.95
    alpha: float = 0.05  # significance level of the Holm-adjusted p-values (the marks in the table)
    output_dir: str = "runs/benchmark"
    progress: bool = True
    eval: EvalCfg = field(default_factory=lambda: EvalCfg(
        folds=5, bootstrap=0, plots=False, print_table=False, progress=False,
        few_shot=FewShotCfg(methods=["prototype", "linear_probe"])))

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in BENCHMARK_MODES]
        if bad:
            raise ValueError(f"benchmark modes must be from {BENCHMARK_MODES}, got {bad}")
        if self.eval.folds < 2 and not self.eval.seeds:
            raise ValueError("a benchmark needs folds >= 2 (the intervals are over folds)")


@dataclass
class Model:
    """A benchmarked model: its folder, display name and weights fingerprint (the model itself on demand)."""

    directory: Path
    name: str
    fingerprint: str
    loaded: Optional[object] = None

    def get(self):
        if self.loaded is None:
            self.loaded = load_model(self.directory).model
        return self.loaded


def resolve_models(paths: List[str], reference: Optional[str]) -> tuple[List[Model], int]:
    """(models, index of the reference); the reference is added first when it is not among ``paths``;
    display names are the folder names (a run folder's ``model/`` takes the run's), made unique."""
    from ..constants import WEIGHTS_NAME

    dirs = [resolve_model_dir(p) for p in paths]
    ref_dir = resolve_model_dir(reference) if reference else dirs[0] if dirs else None
    if ref_dir is None:
        raise ValueError("benchmark needs at least one model (--models DIR ...)")
    if all(d.resolve() != ref_dir.resolve() for d in dirs):
        dirs.insert(0, ref_dir)
    models, seen = [], {}
    for d in dirs:
        weights = d / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{d}: no {WEIGHTS_NAME} (a model folder written by save_pretrained, "
                                    f"fundus-vlp export or fundus-vlp import)")
        name = d.resolve().parent.name if d.name == "model" else d.name
        seen[name] = seen.get(name, 0) + 1
        models.append(Model(d, name if seen[name] == 1 else f"{name}-{seen[name]}", model_fingerprint(None, weights)))
    ref = next(i for i, m in enumerate(models) if m.directory.resolve() == ref_dir.resolve())
    return models, ref


def cell_key(model: Model, experiment: str, mode: str, ecfg: EvalCfg) -> str:
    settings = {k: v for k, v in asdict(ecfg).items() if k not in _RUN_ONLY}
    blob = json.dumps({"format": CELL_FORMAT, "model": model.fingerprint, "experiment": experiment, "mode": mode,
                       "eval": settings}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:60]


def cell_path(out: Path, model: Model, experiment: str, mode: str, key: str) -> Path:
    return out / "cells" / f"{_slug(model.name)}__{_slug(experiment)}__{mode}-{key}.json"


def read_cell(path: Path, key: str) -> Optional[Dict]:
    """A finished cell, or None (missing, unreadable or from other settings: recomputed)."""
    if not path.is_file():
        return None
    try:
        cell = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        _logger.warning("ignoring unreadable benchmark cell %s (%s)", path, exc)
        return None
    return cell if cell.get("key") == key else None


def _plain_folds(folds: List[Dict]) -> List[Dict]:
    return [{"y_true": np.asarray(f["y_true"]).tolist(), "probs": np.asarray(f["probs"], dtype=float).round(7).tolist(),
             "threshold": f.get("threshold"), "positive": int(f.get("positive", 1)), "task": f.get("task")}
            for f in folds]


def _slim(row: Dict) -> Dict:
    return {k: v for k, v in row.items() if k not in ("hparams",)}


def run_cell(model: Model, experiment: str, mode: str, ecfg: EvalCfg, out: Path, key: str) -> Dict:
    """Evaluate one model × experiment × mode; a text-only mode of an image-only model is a skipped cell."""
    from .runner import evaluate

    cfg = replace(ecfg, output_dir=str(out / "runs" / _slug(model.name) / _slug(experiment) / mode),
                  cache_dir=str(out / "features"))
    cell = {"key": key, "model": model.name, "model_dir": str(model.directory), "experiment": experiment,
            "mode": mode, "image_only": is_image_only(model.get())}
    t0 = time.perf_counter()
    try:
        res = evaluate(model.get(), experiment, [mode], cfg, model_name=model.name, fingerprint=model.fingerprint)
    except ImageOnlyError as exc:
        return {**cell, "skipped": "image-only model: skipped", "reason": str(exc), "rows": [], "folds": {}}
    rows = [r for r in res["rows"] if r.get("per_fold")]
    from .tables import prediction_key

    folds = {prediction_key(r["mode"], r["method"], r["split"], r["shots"]): _plain_folds(
        res["fold_predictions"][prediction_key(r["mode"], r["method"], r["split"], r["shots"])]) for r in rows}
    return {**cell, "rows": [_slim(r) for r in rows], "folds": folds, "notes": res["notes"],
            "seconds": round(time.perf_counter() - t0, 2), "feature_cache": res["feature_cache"]}


def run_benchmark(cfg: BenchmarkCfg, on_cell: Optional[Callable[[Dict], None]] = None) -> Dict:
    """Run (or resume) every cell, then write the comparison (``benchmark_report.write_report``).

    Returns ``{"out_dir", "cells", "computed", "reused", "seconds", "report"}``; ``on_cell`` is called after each
    computed cell has been persisted (the tests interrupt a run there).
    """
    from .benchmark_report import write_report

    if not cfg.models or not cfg.experiments:
        raise ValueError("benchmark needs --models DIR ... and --experiments NAME ...")
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    models, ref = resolve_models(cfg.models, cfg.reference)
    todo = [(m, e, mode) for m in models for e in cfg.experiments for mode in cfg.modes]
    cells, computed, reused = [], 0, 0
    bar = tqdm(todo, desc="benchmark", unit="cell", disable=None if cfg.progress else True)
    for model, exp, mode in bar:
        bar.set_postfix_str(f"{model.name} × {exp} × {mode}")
        key = cell_key(model, exp, mode, cfg.eval)
        path = cell_path(out, model, exp, mode, key)
        cell = read_cell(path, key)
        if cell is None:
            cell = run_cell(model, exp, mode, cfg.eval, out, key)
            write_text_atomic(path, json.dumps(cell))
            computed += 1
            if on_cell is not None:
                on_cell(cell)
        else:
            reused += 1
        cells.append(cell)
        if model is not models[-1] and all(m is not model for m, *_ in todo[len(cells):]):
            model.loaded = None  # free a model once its cells are done
    bar.close()
    report = write_report(cells, [m.name for m in models], models[ref].name, cfg, out)
    seconds = time.perf_counter() - t0
    summary = {"out_dir": str(out), "computed": computed, "reused": reused, "seconds": round(seconds, 1),
               "models": [{"name": m.name, "dir": str(m.directory), "fingerprint": m.fingerprint} for m in models],
               "reference": models[ref].name}
    write_text_atomic(out / "run.json", json.dumps(summary, indent=2))
    return {**summary, "cells": cells, "report": report}
