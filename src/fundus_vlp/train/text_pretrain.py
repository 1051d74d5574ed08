"""``fundus-vlp text-pretrain``: KeepFIT V2 stage 0 run by the main ``Trainer`` as the ``text_pretrain`` method.

The objective, the encoder and the vocabulary are in ``methods/mlm.py``, the corpus and its masked batches in
``data/text_corpus.py``; this module turns the command's flat config into a run and reports its outcome. The
output folder ``run_dir/text_model`` (MLM model + tokenizer) is usable as the text tower of any model config:
``model.text.hf_model_name=<folder>``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..data.text_corpus import require_corpus
from ..methods.mlm import load_coverage
from .config import TextPretrainCfg, stage0_run_cfg
from .loop import Callback, pretrain


@dataclass
class TextPretrainResult:
    run_dir: Path
    model_dir: Path
    steps: int
    train_loss: float
    val_loss: float
    val_masked_accuracy: float
    seconds: float
    coverage: Optional[Dict[str, Any]] = None  # share of [UNK] in the knowledge bases and prompts, per language


def default_run_name(cfg: TextPretrainCfg) -> str:
    """``run_name``, else ``text-pretrain-<time>`` (empty when resuming from a checkpoint path: its run)."""
    if cfg.run_name or (cfg.resume and cfg.resume != "latest"):
        return cfg.run_name
    return f"text-pretrain-{time.strftime('%Y%m%d-%H%M%S')}"


def text_pretrain(cfg: TextPretrainCfg, callbacks: Sequence[Callback] = ()) -> TextPretrainResult:
    require_corpus(cfg.corpus, cfg.include_elite_captions, cfg.demo)  # before anything is loaded or written
    result = pretrain(stage0_run_cfg(cfg, default_run_name(cfg)), callbacks)
    final = result.final_metrics
    return TextPretrainResult(result.run_dir, result.run_dir / "text_model", result.steps, result.final_loss,
                              final.get("val_loss", math.nan), final.get("val_masked_accuracy", math.nan),
                              result.seconds, load_coverage(result.run_dir))
