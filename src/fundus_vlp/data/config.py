"""The data section of a pretraining run (``data.*``) and what a method asks of the data pipeline."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from ..config import AugmentCfg


@dataclass(frozen=True)
class DataNeeds:
    """What a pretraining method needs from the data pipeline; decided before the method is built."""

    elite: bool = False  # draw an elite batch alongside every main batch
    pool_elite: bool = False  # append the elite pairs to the main stream instead (naive pooling)
    augment_description: bool = True  # expert-knowledge description augmentation of categorical prompts
    multi_hot: bool = False  # batches carry each image's multi-hot label vector


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
    num_workers: int = -1  # loader worker processes; -1: chosen from the core count (loader.resolve_num_workers)
    prompt: PromptCfg = field(default_factory=PromptCfg)
    ban: BanCfg = field(default_factory=BanCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    augment_elite: bool = False  # keepfit.md §2.4: elite images are not augmented
