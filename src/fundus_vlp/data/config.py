"""The data section of a pretraining run (``data.*``) and what a method asks of the data pipeline."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from ..config import AugmentCfg
from ..config.loading import check_choice
from ..constants import DEFAULT_MAX_IMAGE_PIXELS
from .dataframes import ON_BAD_IMAGE, ON_EMPTY_CAPTION

MODALITIES = ("CFP", "FFA", "OCT")  # imaging modalities of elite sets (DataSourceCfg.modality, data.elite_modalities)
CAPTION_COLUMNS = {"en": "caption", "zh": "caption_zh"}  # the caption-file column of each caption language
CAPTION_LANGUAGES = (*CAPTION_COLUMNS, "both")  # "both": one of the two per sample (or both texts, stage 0)


@dataclass(frozen=True)
class DataNeeds:
    """What a pretraining method needs from the data pipeline; decided before the method is built."""

    elite: bool = False  # draw an elite batch alongside every main batch
    pool_elite: bool = False  # append the elite pairs to the main stream instead (naive pooling)
    augment_description: bool = True  # expert-knowledge description augmentation of categorical prompts
    multi_hot: bool = False  # batches carry each image's multi-hot label vector


@dataclass(frozen=True)
class BatchPlan:
    """Per-rank batch shapes of one optimiser step (``accum_freq`` micro-batches), decided once per run by
    ``train.plan.plan_run`` and handed to the data layer; ``elite_micro`` is 0 without an elite stream."""

    micro: int
    elite_micro: int = 0
    accum_freq: int = 1


@dataclass
class DataSourceCfg:
    """One dataset: CSV dataframes whose image paths are relative to `root`."""

    dataframes: List[str] = field(default_factory=list)
    root: str = ""
    modality: str = "CFP"  # CFP | FFA | OCT: elite sets are selected by modality
    name: str = ""


@dataclass
class PromptCfg:
    """Categorical labels -> text (docs/reference.md#flair-pretraining)."""

    template: str = "A [ATR] fundus photograph of [CLS]"
    augment_description: bool = True  # expert-knowledge description augmentation (FLAIR)
    description_mode: str = "replace"  # "replace" the class name (FLAIR) or "append" a description (RetiXfer)
    # Free-text sources are not augmented. The official list says 06_EYENET but the folder is 06_DEN
    # (the official skip list names ``06_EYENET``); we list the real folder name.
    skip_datasets: List[str] = field(default_factory=lambda: ["06_DEN", "11_STARE", "08_ODIR-5K", "31_JICHI"])
    knowledge: str = "fundus_en"  # packaged knowledge base name or a YAML path


@dataclass
class BanCfg:
    """Unseen-class protocol (docs/reference.md#unseen-class-ban-list): drop samples that mention banned conditions."""

    terms: List[str] = field(default_factory=list)
    use_synonyms: bool = True  # also ban the knowledge base's synonyms of each term
    # knowledge bases in other languages whose names and synonyms of each term are banned too
    extra_knowledge: List[str] = field(default_factory=lambda: ["fundus_zh"])
    apply_to: List[str] = field(default_factory=lambda: ["categories"])  # + "elite", "corpus"


@dataclass
class DataCfg:
    source: str = "files"  # "files" (dataframes below) or "demo" (the embedded demo world)
    demo_size: str = "demo"  # demo world preset when source=demo: "demo" or "tiny"
    demo_seed: int = 0
    public: List[DataSourceCfg] = field(default_factory=list)
    elite: List[DataSourceCfg] = field(default_factory=list)
    elite_modalities: List[str] = field(default_factory=lambda: ["CFP"])
    balance: bool = False  # dataset-balanced sampling: each source dataset gets an equal share
    # "error" or "skip": a row whose image path escapes the root, is missing, empty or unreadable is found
    # when the datasets are built (all of them, reported at once); with skip those rows are dropped and
    # counted, and images that fail to decode later are substituted, counted and reported per epoch
    on_bad_image: str = "error"
    on_empty_caption: str = "error"  # caption files: "error" or "skip" (drop rows with an empty caption, counted)
    encoding: str = "utf-8"  # text encoding of every dataframe (utf-8 with or without BOM; latin-1, gb18030, ...)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images are bad images (decompression bombs); 0 = Pillow's limit only
    num_workers: int = -1  # loader worker processes; -1: chosen from the core count (loader.resolve_num_workers)
    prompt: PromptCfg = field(default_factory=PromptCfg)
    ban: BanCfg = field(default_factory=BanCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    augment_elite: bool = False  # KeepFIT v1 does not augment elite images
    # caption text of image-caption pairs: "en", "zh" (caption_zh) or "both" (one of the two drawn per sample,
    # seeded); a row without the chosen language uses the other one (counted in the run summary)
    caption_language: str = "en"

    def __post_init__(self) -> None:
        check_choice("data.caption_language", self.caption_language, CAPTION_LANGUAGES)
        check_choice("data.on_bad_image", self.on_bad_image, ON_BAD_IMAGE)
        check_choice("data.on_empty_caption", self.on_empty_caption, ON_EMPTY_CAPTION)
