"""One module per evaluation mode; each exposes ``run(ctx) -> rows``."""
from __future__ import annotations

from typing import Callable, Dict, List

from ..context import EvalContext
from .finetune import run_finetune
from .few_shot import fit_predict_few_shot, run_few_shot
from .linear_probe import run_linear_probe
from .report import run_report
from .retrieval import run_retrieval
from .segmentation import run_segmentation
from .zero_shot import run_zero_shot

RUNNERS: Dict[str, Callable[[EvalContext], List[Dict]]] = {
    "zero-shot": run_zero_shot,
    "few-shot": run_few_shot,
    "linear-probe": run_linear_probe,
    "fine-tune": run_finetune,
    "retrieval": run_retrieval,
    "segmentation": run_segmentation,
    "report": run_report,
}

__all__ = ["RUNNERS", "fit_predict_few_shot", "run_few_shot", "run_finetune", "run_linear_probe", "run_report",
           "run_retrieval", "run_segmentation", "run_zero_shot"]
