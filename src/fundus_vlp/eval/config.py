"""``EvalCfg``: every option of ``fundus-vlp eval`` (merged from YAML + ``key=value`` at the CLI edge).

Defaults follow the official protocol (docs/reference.md#evaluation-protocol) where they are sound and the leak-free
fixes elsewhere;
``bug_compat`` switches reproduce official behaviour for parity checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..config import BugCompatCfg
from ..data.prompts import NEGATIVE_TEMPLATE, PROMPT_LANGUAGES, ZERO_SHOT_TEMPLATE
from .adapters import (DEFAULT_ALPHAS, DEFAULT_BETAS, DEFAULT_NEIGHBOURS, DEFAULT_RATIOS, DEFAULT_TEMPERATURES,
                       AdapterOptimCfg)
from .linear_probe import DEFAULT_C_GRID

MODES = ("zero-shot", "few-shot", "linear-probe", "fine-tune", "retrieval", "segmentation", "report")
SEG_INITS = ("pretrained", "random", "imagenet")
TOWER_FINETUNE = ("frozen", "last_block", "full")  # how much of the image tower trains (segmentation, report)
SEG_ARCHITECTURES = ("auto", "unet", "fpn", "dpt")
SEG_LOSSES = ("dice_ce", "dice_focal")  # foreground Dice + class-weighted cross-entropy | + focal term
EXPERIMENT_FREE_MODES = ("report",)  # modes that read their own data, not a classification experiment
REPORT_UNITS = ("case", "image")
TOWER_INITS = ("model", "random", "imagenet")
DECODER_INITS = ("auto", "pretrained", "fresh")
FEW_SHOT_METHODS = ("clip_adapter", "tip_adapter", "tip_adapter_f", "linear_probe", "prototype", "knn")
# what an image-only model (no text tower) can run: adapters without prompt prototypes, modes without text
IMAGE_ONLY_FEW_SHOT = ("linear_probe", "prototype", "knn")
TEXT_MODES = ("zero-shot", "retrieval")


@dataclass
class ZeroShotCfg:
    templates: List[str] = field(default_factory=lambda: [ZERO_SHOT_TEMPLATE])  # "[CLS]" or "{}" slot
    domain_knowledge: bool = True  # add the knowledge base's descriptions to each class's ensemble
    # knowledge base: descriptions, and the class names prompts use when its entries have a `name` (fundus_zh)
    knowledge: str = "fundus_en"
    negative_templates: List[str] = field(default_factory=lambda: [NEGATIVE_TEMPLATE])
    on_fold_splits: bool = True  # also report zero-shot on the folds' test splits (comparable to few-shot)
    # prompt language shortcut: "zh" swaps each of knowledge/templates/negative_templates still at its
    # English default for the Chinese one (fundus_zh, "一张[CLS]的眼底照片"); explicit values are kept
    language: str = "en"

    def __post_init__(self) -> None:
        if self.language not in PROMPT_LANGUAGES:
            raise ValueError(f"zero_shot.language must be one of {sorted(PROMPT_LANGUAGES)}, got {self.language!r}")
        english = PROMPT_LANGUAGES["en"]
        knowledge, template, negative = PROMPT_LANGUAGES[self.language]
        if self.knowledge == english[0]:
            self.knowledge = knowledge
        if list(self.templates) == [english[1]]:
            self.templates = [template]
        if list(self.negative_templates) == [english[2]]:
            self.negative_templates = [negative]


@dataclass
class FewShotCfg:
    shots: List[int] = field(default_factory=lambda: [1, 5, 10])  # per class
    val_shots: Optional[int] = None  # validation images per class; None = same as shots
    # default: the prompt-based adapters and the probe (prototype, knn: on request, and for image-only models)
    methods: List[str] = field(default_factory=lambda: ["clip_adapter", "tip_adapter", "tip_adapter_f", "linear_probe"])
    optim: AdapterOptimCfg = field(default_factory=AdapterOptimCfg)  # trainable adapters; seed = the fold's
    clip_adapter_reduction: int = 4
    clip_adapter_ratios: List[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    alphas: List[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    betas: List[float] = field(default_factory=lambda: list(DEFAULT_BETAS))
    tip_f_init_alpha: float = 1.0
    tip_f_init_beta: float = 5.0
    temperatures: List[float] = field(default_factory=lambda: list(DEFAULT_TEMPERATURES))  # prototype
    neighbours: List[int] = field(default_factory=lambda: list(DEFAULT_NEIGHBOURS))  # knn: k chosen on validation


@dataclass
class LinearProbeCfg:
    train_fraction: Optional[float] = None  # of each class; None = every non-test, non-val image
    val_fraction: float = 0.2
    c: Optional[float] = None  # fixed C (0.316 = official); None = chosen on validation
    c_grid: List[float] = field(default_factory=lambda: list(DEFAULT_C_GRID))
    refit_on_train_val: bool = False
    max_iter: int = 1000
    project_features: bool = True  # False: raw pooled trunk features (the KeepFIT paper's setting)


@dataclass
class FinetuneCfg:
    mode: str = "ft"  # ft | lp_ft | last_block | frozen_bn
    folds: Optional[int] = None  # None = EvalCfg.folds
    train_fraction: Optional[float] = None
    val_fraction: float = 0.2
    epochs: int = 50
    lr: float = 1e-4
    eps: float = 1e-4
    weight_decay: float = 0.01
    batch_size: int = 8
    patience: int = 10
    grad_clip: float = 1.0
    augment: bool = True
    class_weighted: bool = True
    project_features: bool = True


@dataclass
class RetrievalCfg:
    captions: Optional[str] = None  # image, caption CSV (default: the experiment's caption set)
    image_root: Optional[str] = None
    ks: List[int] = field(default_factory=lambda: [1, 5, 10])
    captioning: bool = True  # also BLEU/ROUGE-L/CIDEr/METEOR for models with a caption decoder
    max_length: Optional[int] = None
    num_beams: int = 1


@dataclass
class SegmentationCfg:
    """``eval segmentation``: a decoder on the image trunk (``segmentation.py``), trained and selected on
    validation Dice (never on a constant prediction) by ``segmentation_train.py``."""

    inits: List[str] = field(default_factory=lambda: ["pretrained"])  # pretrained | random | imagenet (one row each)
    imagenet_checkpoint: Optional[str] = None  # local timm checkpoint for init "imagenet" (never downloaded)
    finetune: str = "frozen"  # frozen | last_block | full
    architecture: str = "auto"  # auto (unet for CNN trunks, dpt for ViTs) | unet | fpn | dpt
    # decoder widths, 5 values: UNet stages (None = smp's 256..16); DPT: 4 reassemble widths + the fusion
    # width (None = [w/4, w/2, w, w, w/4] of the ViT width w: a decoder sized to its trunk)
    decoder_channels: Optional[List[int]] = None
    size: Optional[int] = None  # square training/evaluation resolution; None = the model's preprocess.size
    folds: Optional[int] = None  # None = EvalCfg.folds
    train_fraction: Optional[float] = None  # None = every non-test, non-val image
    val_fraction: float = 0.2
    epochs: int = 40
    patience: int = 12  # epochs without a better non-trivial validation Dice
    min_steps_per_epoch: int = 10  # small sets are repeated within an epoch (reshuffled) up to this many steps
    warmup_epochs: int = 2  # linear warm-up, then cosine decay to 0 at `epochs`
    loss: str = "dice_ce"  # dice_ce | dice_focal (foreground Dice + weighted cross-entropy | + focal term)
    batch_size: int = 8
    lr: float = 3e-3  # decoder and segmentation head (peak, after the warm-up)
    encoder_lr: float = 1e-4  # trainable encoder parts (last_block / full)
    weight_decay: float = 1e-4
    augment: bool = True  # seeded horizontal and vertical flips
    plot_images: int = 6  # test images of fold 0 in the mask plot
    # decode every pair once into a memory-mapped cache at the working size, reused by later runs (false: decode
    # into memory on every run); cache_dir None = $FUNDUS_VLP_CACHE/segmentation or beside the feature cache
    cache: bool = True
    cache_dir: Optional[str] = None
    workers: Optional[int] = None  # decoding threads (None = the usable CPU cores)

    def __post_init__(self) -> None:
        bad = [i for i in self.inits if i not in SEG_INITS]
        if bad or not self.inits:
            raise ValueError(f"segmentation.inits must be a non-empty list from {SEG_INITS}, got {self.inits}")
        if self.finetune not in TOWER_FINETUNE:
            raise ValueError(f"segmentation.finetune must be one of {TOWER_FINETUNE}, got {self.finetune!r}")
        if self.architecture not in SEG_ARCHITECTURES:
            raise ValueError(f"segmentation.architecture must be one of {SEG_ARCHITECTURES}, got {self.architecture!r}")
        if self.loss not in SEG_LOSSES:
            raise ValueError(f"segmentation.loss must be one of {SEG_LOSSES}, got {self.loss!r}")
        if self.decoder_channels is not None and len(self.decoder_channels) != 5:
            raise ValueError(f"segmentation.decoder_channels needs 5 widths, got {self.decoder_channels}")
        if "imagenet" in self.inits and not self.imagenet_checkpoint:
            raise ValueError("segmentation init 'imagenet' needs segmentation.imagenet_checkpoint=FILE (a local timm "
                             "checkpoint; weights are never downloaded)")


@dataclass
class ReportCfg:
    """Report generation (``eval report``): the caption decoder fine-tuned on case-level reports."""

    annotations: Optional[str] = None  # FFA-IR JSON, an image-caption CSV (KeepFIT FFA.csv), or "demo"
    image_root: Optional[str] = None  # default: EvalCfg.image_root (the demo world's root for "demo")
    report_key: str = "En_Report"  # the JSON key of the report text (e.g. "Cn_Report" with a Chinese tokenizer)
    # case: the tokens of up to max_images images of a case form one memory, one target per case;
    # image: one sample per image with the case report replicated (the official KeepFIT-FFA behaviour),
    # scored per image
    unit: str = "case"
    max_images: int = 8  # per case; more are subsampled evenly over the sequence (early to late frames)
    tower_init: str = "model"  # model (the pretrained tower) | random | imagenet (a local timm checkpoint)
    imagenet_checkpoint: Optional[str] = None  # timm state dict (.safetensors/.pth) for tower_init=imagenet
    decoder_init: str = "auto"  # auto: the model's decoder if it has one, else fresh | pretrained | fresh
    tokenizer: Optional[str] = None  # tokenizer folder of a fresh decoder (default the model's; image-only: MiniLM's)
    # frozen: image tokens computed once; last_block: the trunk's last stage trains with the decoder (its inputs
    # computed once, held in memory); full: the whole tower trains (the slowest)
    finetune: str = "frozen"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 3e-4
    tower_lr: float = 1e-4  # trained tower parts (finetune=last_block|full)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    max_length: Optional[int] = None  # report tokens; default the decoder's position table
    select_metric: str = "cider"  # validation metric choosing the epoch: loss, or bleu_1..4 / rouge_l / cider
    eval_every: int = 1  # epochs between validations
    patience: int = 8  # validations without improvement before stopping
    num_beams: int = 3  # test decoding (beam search)
    val_num_beams: int = 1  # validation decoding (greedy: cheaper, and only ranks epochs)
    seed: Optional[int] = None  # default EvalCfg.seed
    val_fraction: float = 0.15  # CSV form only (the JSON has its own splits)
    test_fraction: float = 0.15
    group_pattern: Optional[str] = None  # CSV form: regex on the image path; a match's rows share a split
    examples: int = 5  # generated reports shown beside the references in results.md

    def __post_init__(self) -> None:
        for name, value, allowed in (("unit", self.unit, REPORT_UNITS), ("tower_init", self.tower_init, TOWER_INITS),
                                     ("decoder_init", self.decoder_init, DECODER_INITS),
                                     ("finetune", self.finetune, TOWER_FINETUNE)):
            if value not in allowed:
                raise ValueError(f"report.{name} must be one of {allowed}, got {value!r}")
        metrics = ("loss", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")
        if self.select_metric not in metrics:
            raise ValueError(f"report.select_metric must be one of {metrics}, got {self.select_metric!r}")
        if self.max_images < 1 or self.epochs < 0 or self.batch_size < 1 or self.num_beams < 1:
            raise ValueError("report.max_images, batch_size and num_beams must be >= 1 and epochs >= 0")


@dataclass
class EvalCfg:
    model: Optional[str] = None  # a saved model folder
    experiment: Optional[str] = None  # built-in name, YAML path, or demo:<name>
    modes: List[str] = field(default_factory=lambda: ["zero-shot", "few-shot", "linear-probe"])
    dataframe_dir: Optional[str] = None  # where the KeepFIT/FLAIR dataframes are ($FUNDUS_VLP_DATAFRAMES)
    image_root: Optional[str] = None  # where the images are ($FUNDUS_VLP_DATA)
    folds: int = 5  # repeated seeded splits (Monte-Carlo), not disjoint k-fold
    seed: int = 0  # fold f uses seed + f
    seeds: List[int] = field(default_factory=list)  # explicit fold seeds (overrides folds/seed)
    test_fraction: float = 0.2  # per class, drawn first; ignored when the experiment has an official test set
    binary_threshold: str = "val"  # "val": threshold chosen on validation; "argmax"
    bootstrap: int = 1000  # bootstrap replicates for 95 % intervals (0: none)
    ci_metrics: List[str] = field(default_factory=lambda: ["acc", "aca"])
    batch_size: int = 32
    num_workers: int = 0
    device: str = "auto"
    output_dir: Optional[str] = None  # default runs/eval/<experiment>-<modes>-<timestamp>
    cache_dir: Optional[str] = None  # default $FUNDUS_VLP_CACHE/features, else next to the run folder(s)
    plots: bool = True
    progress: bool = True
    print_table: bool = True
    demo: Dict[str, Any] = field(default_factory=dict)  # DemoWorldCfg fields for demo:<name> experiments
    demo_cache_dir: Optional[str] = None
    zero_shot: ZeroShotCfg = field(default_factory=ZeroShotCfg)
    few_shot: FewShotCfg = field(default_factory=FewShotCfg)
    linear_probe: LinearProbeCfg = field(default_factory=LinearProbeCfg)
    finetune: FinetuneCfg = field(default_factory=FinetuneCfg)
    retrieval: RetrievalCfg = field(default_factory=RetrievalCfg)
    segmentation: SegmentationCfg = field(default_factory=SegmentationCfg)
    report: ReportCfg = field(default_factory=ReportCfg)
    bug_compat: BugCompatCfg = field(default_factory=BugCompatCfg)

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ValueError(f"unknown eval mode(s) {bad}; choose from {MODES}")
        bad = [m for m in self.few_shot.methods if m not in FEW_SHOT_METHODS]
        if bad:
            raise ValueError(f"unknown few-shot method(s) {bad}; choose from {FEW_SHOT_METHODS}")
        if self.binary_threshold not in ("val", "argmax"):
            raise ValueError(f"binary_threshold must be 'val' or 'argmax', got {self.binary_threshold!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
