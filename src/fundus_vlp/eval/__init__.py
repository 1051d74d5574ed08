"""Leak-free transfer evaluation: zero-shot, few-shot adapters, linear probe, fine-tuning, retrieval.

``evaluate(model_or_dir, experiment, modes, cfg)`` is the Python entry point; ``fundus-vlp eval`` the CLI.
"""
from .config import EvalCfg
from .experiments import Experiment, builtin_experiments, get_experiment
from .metrics import aggregate_folds, bootstrap_ci, compute_metrics
from .tables import format_summary, format_table
from .runner import evaluate
from .splits import Split, make_splits
from ..inference.zero_shot import build_zero_shot_classifier

__all__ = ["EvalCfg", "Experiment", "Split", "aggregate_folds", "bootstrap_ci", "build_zero_shot_classifier",
           "builtin_experiments", "compute_metrics", "evaluate", "format_summary", "format_table", "get_experiment",
           "make_splits"]
