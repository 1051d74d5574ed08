"""Typed configuration of a pretraining run (``fundus-vlp pretrain``) and of the MLM text stage.

Defaults follow the official recipes (docs/reference.md#flair-pretraining, #keepfit-v1-data-pipeline) with their
known bugs fixed;
the faithful behaviour of each bug is a named switch in ``BugCompatCfg``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict

from ..config import BugCompatCfg, ModelCfg
from ..config.loading import check_choice
from ..data.config import DataCfg
from ..methods import get_method, method_names, method_options_classes
from ..runtime.precision import PRECISIONS
from ..config.schema import from_dict
from ..methods.mlm import FROM_SCRATCH_BERT, MLMCfg, MLMMethod, ScratchBertCfg, TokenizerTrainCfg  # noqa: F401


@dataclass
class OptimCfg:
    lr: float = 1e-4
    weight_decay: float = 1e-5
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_epochs: float = 1.0  # linear warm-up, then cosine to min_lr at the real last step
    warmup_steps: int = -1  # >= 0 overrides warmup_epochs
    schedule: str = "cosine"  # cosine | constant
    min_lr: float = 0.0
    grad_clip_norm: float = 1.0  # global L2 norm of all gradients; 0 disables


@dataclass
class TrainCfg:
    epochs: int = 15
    max_steps: int = 0  # > 0: stop after this many optimiser steps (smoke tests, benchmarks)
    batch_size: int = 24  # per rank, public (or pair) batch
    elite_batch_size: int = 0  # per rank; 0 = same as batch_size
    accum_freq: int = 1  # gradient accumulation that keeps all negatives (feature cache)
    precision: str = "fp32"  # fp32 | amp_bf16 | amp_fp16
    grad_checkpointing: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    lock_text_layers: int = -1  # -1: train the whole text tower; N >= 0: freeze all but the last N layers
    seed: int = 42
    deterministic: bool = False
    device: str = "auto"
    log_every: int = 10
    save_every_steps: int = 0  # 0: checkpoint at the end of every epoch only
    keep_checkpoints: int = 2
    tensorboard: bool = True

    def __post_init__(self) -> None:
        check_choice("train.precision", self.precision, PRECISIONS)


@dataclass
class PretrainCfg:
    method: str = "keepfit_v2"
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    # + one section per registered method with options (``<method>.*``, its ``options_class``), added by the
    # config loader (config_sections), so a new method never edits this class
    bug_compat: BugCompatCfg = field(default_factory=BugCompatCfg)
    output_dir: str = "runs"
    run_name: str = ""  # default: <method>-<timestamp>
    resume: str = ""  # "", "latest" or a checkpoint path
    allow_config_change: bool = False  # resume although the config differs from the run's config.yaml
    overwrite: bool = False  # a new run where a run exists: the old folder is moved aside (never deleted)
    init_from: str = ""  # a saved model folder to start from (e.g. continue from a FLAIR-style model)

    def __post_init__(self) -> None:
        if self.method not in method_names():
            raise ValueError(f"method must be one of {', '.join(method_names())}, got {self.method!r}")
        if get_method(self.method).needs_decoder:
            self.model.decoder.enabled = True  # the generative branch is part of the method

    @classmethod
    def config_sections(cls) -> Dict[str, type]:
        """Sections the config loader adds: the options of every registered method (``keepfit.lambda_mm``)."""
        return method_options_classes()

    @property
    def method_options(self) -> Any:
        """The chosen method's options: its section of this config (its defaults in a config built without it)."""
        return getattr(self, self.method, None) or get_method(self.method).default_options()


@dataclass
class TextPretrainCfg(MLMCfg):
    """``fundus-vlp text-pretrain``: the stage-0 options (``MLMCfg``, the ``text_pretrain`` method's) plus the
    run settings, flat as the command has always taken them; ``stage0_run_cfg`` turns it into the run config
    the main ``Trainer`` runs. Optimiser, schedule and clipping are the same ``OptimCfg`` as stage 1."""

    epochs: int = 10
    max_steps: int = 0
    batch_size: int = 24
    accum_freq: int = 1  # micro-batches per optimiser step (their losses averaged)
    precision: str = "fp32"  # fp32 | amp_bf16 | amp_fp16
    optim: OptimCfg = field(default_factory=lambda: OptimCfg(lr=1e-5, weight_decay=0.05))
    seed: int = 42
    device: str = "auto"
    log_every: int = 10
    save_every_steps: int = 0  # 0: checkpoint at the end of every epoch only
    keep_checkpoints: int = 2
    output_dir: str = "runs"
    run_name: str = ""  # default: text-pretrain-<timestamp>
    resume: str = ""  # "", "latest" (with run_name) or a checkpoint path
    allow_config_change: bool = False
    overwrite: bool = False  # a new run where a run exists: the old folder is moved aside (never deleted)
    bug_compat: BugCompatCfg = field(default_factory=BugCompatCfg)


def stage0_run_cfg(cfg: TextPretrainCfg, run_name: str) -> PretrainCfg:
    """The run config of a ``text-pretrain`` command: method ``text_pretrain`` with ``cfg``'s options."""
    options = MLMCfg(**{f.name: getattr(cfg, f.name) for f in fields(MLMCfg)})
    train = TrainCfg(epochs=cfg.epochs, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                     accum_freq=cfg.accum_freq, precision=cfg.precision, seed=cfg.seed, device=cfg.device,
                     log_every=cfg.log_every, save_every_steps=cfg.save_every_steps,
                     keep_checkpoints=cfg.keep_checkpoints, tensorboard=False)
    return from_dict(PretrainCfg, {
        "method": MLMMethod.name, "train": asdict(train), "optim": asdict(cfg.optim), MLMMethod.name: asdict(options),
        "bug_compat": asdict(cfg.bug_compat), "output_dir": cfg.output_dir, "run_name": run_name,
        "resume": cfg.resume, "allow_config_change": cfg.allow_config_change, "overwrite": cfg.overwrite})
