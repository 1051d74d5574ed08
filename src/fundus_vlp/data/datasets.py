"""Training datasets: categorical public samples (label -> prompt) and elite image–caption pairs.

Items are addressed by ``(index, sample_seed)``: every random choice of a sample (prompt attribute and
category, description augmentation, image augmentation) comes from a generator seeded by the sampler
with (run seed, epoch, rank, batch, slot), so a resumed run reproduces the same samples exactly,
whatever the number of loader workers.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..config.loading import check_choice
from .config import CAPTION_COLUMNS, CAPTION_LANGUAGES
from .dataframes import ON_BAD_IMAGE, DataFormatError, dataset_key, where
from .images import BadImageError, load_image
from .knowledge import normalize_label
from .prepare import CacheIndex
from .prompts import PRETRAIN_TEMPLATE, sample_prompt

_logger = logging.getLogger(__name__)
MAX_SUBSTITUTIONS = 16


class LabelVocab:
    """Class ids of category strings, merging trivial spelling variants (case, hyphens, trailing dots).

    FLAIR compares raw strings, so "age-related macular degeneration" and
    "age related macular degeneration" were negatives of each other; we merge such variants.
    The empty category has id -1 (masked out of label-aware targets, docs/reference.md#label-aware-contrastive-loss).
    """

    EMPTY = -1

    def __init__(self, labels: Iterable[str]):
        self.names: List[str] = sorted({n for n in map(normalize_label, labels) if n})
        self._ids = {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def id(self, label: str) -> int:
        key = normalize_label(label)
        return self._ids.get(key, self.EMPTY) if key else self.EMPTY

    def ids(self, labels: Sequence[str]) -> List[int]:
        return sorted({i for i in (self.id(x) for x in labels) if i >= 0})

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "LabelVocab":
        return cls(label for cats in frame["categories"] for label in cats)


@dataclass
class SkippedImage:
    path: str
    where: str
    reason: str


class _ImageSource:
    """Shared image loading with the bad-image policy: ``error`` raises, ``skip`` substitutes the next row."""

    def __init__(self, frame: pd.DataFrame, root: str | Path, transform: Callable, on_bad_image: str,
                 max_pixels: Optional[int] = None):
        check_choice("on_bad_image", on_bad_image, ON_BAD_IMAGE)
        if len(frame) == 0:
            raise ValueError("dataset is empty (no rows left after filtering?)")
        self.frame = frame.reset_index(drop=True)
        self.index = CacheIndex(root)  # a `fundus-vlp prepare` cache, or a plain image root
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.max_pixels = max_pixels
        self.images = list(self.frame["image"])
        self.sources = list(self.frame["source"])
        self.rows = list(self.frame["row"])

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        loc = where(self.sources[index], self.rows[index])
        try:
            path = self.index.resolve(self.images[index], self.sources[index], self.rows[index])
        except DataFormatError as exc:  # rows are validated when the data is built; this keeps `skip` honest anyway
            raise BadImageError(self.images[index], str(exc).split(": ", 1)[-1], loc) from None
        draft = getattr(self.transform, "draft_size", None)
        return self.transform(load_image(path, loc, self.max_pixels, draft_size=draft), rng)

    def load_with_policy(self, index: int, rng: np.random.Generator) -> Tuple[int, torch.Tensor, List[SkippedImage]]:
        """Returns (index actually used, image, skipped list). Substitution keeps batches full, which
        distributed gathers need (equal per-rank sizes)."""
        skipped: List[SkippedImage] = []
        for attempt in range(MAX_SUBSTITUTIONS):
            i = (index + attempt) % len(self)
            try:
                return i, self._load(i, rng), skipped
            except BadImageError as exc:
                if self.on_bad_image == "error":
                    raise
                skipped.append(SkippedImage(exc.path, exc.where or "", exc.reason))
        raise BadImageError(self.images[index], f"{MAX_SUBSTITUTIONS} consecutive unreadable images from here",
                            where(self.sources[index], self.rows[index]))


class CategoricalDataset(Dataset):
    """Public categorical samples -> (image, prompt, sampled class id, all class ids)."""

    def __init__(self, frame: pd.DataFrame, root: str | Path, transform: Callable, vocab: LabelVocab,
                 template: str = PRETRAIN_TEMPLATE, knowledge=None, augment_description: bool = False,
                 description_mode: str = "replace", skip_datasets: Sequence[str] = (), on_bad_image: str = "error",
                 max_pixels: Optional[int] = None):
        self.src = _ImageSource(frame, root, transform, on_bad_image, max_pixels)
        self.atributes = list(self.src.frame["atributes"])
        self.categories = list(self.src.frame["categories"])
        self.label_ids = [vocab.ids(c) for c in self.categories]  # once, not per sample
        self.dataset_keys = [dataset_key(p) for p in self.src.images]
        self.vocab = vocab
        self.template = template
        self.knowledge = knowledge
        self.augment_description = augment_description
        self.description_mode = description_mode
        self.skip = set(skip_datasets)

    def __len__(self) -> int:
        return len(self.src)

    def get(self, index: int, seed: int) -> Dict[str, Any]:
        rng = np.random.default_rng(seed)
        i, image, skipped = self.src.load_with_policy(index, rng)
        augment = self.augment_description and self.dataset_keys[i] not in self.skip
        text, category = sample_prompt(self.atributes[i], self.categories[i], rng, self.template, self.knowledge,
                                       augment, self.description_mode)
        return {"image": image, "text": text, "label": self.vocab.id(category),
                "label_ids": self.label_ids[i], "skipped": skipped}

    def groups(self) -> Dict[str, List[int]]:
        """Row indices per source dataset (first path component), for balanced sampling."""
        out: Dict[str, List[int]] = {}
        for i, key in enumerate(self.dataset_keys):
            out.setdefault(key, []).append(i)
        return out


class CaptionDataset(Dataset):
    """Elite image–caption pairs (no augmentation by default: KeepFIT v1 does not augment elite images).

    ``language``: "en" uses ``caption``, "zh" uses ``caption_zh``, "both" draws one of the two per sample
    from the sample's seeded generator (after the image, so "en" runs draw exactly as before). A row that
    lacks the chosen language falls back to the other; :meth:`language_counts` says how many rows do.
    """

    def __init__(self, frame: pd.DataFrame, root: str | Path, transform: Callable, on_bad_image: str = "error",
                 max_pixels: Optional[int] = None, language: str = "en"):
        check_choice("caption language", language, CAPTION_LANGUAGES)
        self.src = _ImageSource(frame, root, transform, on_bad_image, max_pixels)
        self.language = language
        self.captions = list(self.src.frame["caption"])
        zh_column = CAPTION_COLUMNS["zh"]
        zh = self.src.frame[zh_column] if zh_column in self.src.frame.columns else [""] * len(self.captions)
        self.captions_zh = [c if isinstance(c, str) else "" for c in zh]  # NaN where concatenated frames lack it

    def __len__(self) -> int:
        return len(self.src)

    def text(self, i: int, rng: np.random.Generator) -> str:
        en, zh = self.captions[i], self.captions_zh[i]
        if self.language == "en":
            return en or zh
        if self.language == "zh":
            return zh or en
        if en and zh:
            return zh if rng.random() < 0.5 else en
        return en or zh

    def language_counts(self) -> Dict[str, int]:
        """Rows with both languages, English only, Chinese only; ``fallback`` = rows that cannot give the
        chosen language (for "both": rows with only one language, which always give that one)."""
        en = [bool(c) for c in self.captions]
        zh = [bool(c) for c in self.captions_zh]
        counts = {"both": sum(a and b for a, b in zip(en, zh)), "en_only": sum(a and not b for a, b in zip(en, zh)),
                  "zh_only": sum(b and not a for a, b in zip(en, zh))}
        missing = {"en": counts["zh_only"], "zh": counts["en_only"],
                   "both": counts["en_only"] + counts["zh_only"]}[self.language]
        return {**counts, "fallback": missing}

    def get(self, index: int, seed: int) -> Dict[str, Any]:
        rng = np.random.default_rng(seed)
        i, image, skipped = self.src.load_with_policy(index, rng)
        return {"image": image, "text": self.text(i, rng), "label": LabelVocab.EMPTY, "label_ids": [],
                "skipped": skipped}


class ConcatParts:
    """Several datasets with ``get(index, seed)`` (e.g. one per image root) as one index space."""

    def __init__(self, parts: Sequence[Any]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get(self, index: int, seed: int) -> Dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[part].get(index - int(self.offsets[part]), seed)


class TrainingDataset(Dataset):
    """The loader's single dataset: items are keyed ``(stream, index, seed)``.

    Stream "p" = the main stream (public categorical samples, then optional extra pair datasets),
    stream "e" = the elite stream drawn alongside every main batch (KeepFIT mixed training).
    """

    def __init__(self, main: Sequence[Dataset], elite: Optional[Dataset] = None):
        self.main = ConcatParts(main)
        self.elite = elite

    @property
    def main_size(self) -> int:
        return len(self.main)

    def __len__(self) -> int:
        return self.main_size

    def __getitem__(self, key: Tuple[str, int, int]) -> Dict[str, Any]:
        stream, index, seed = key
        item = (self.elite if stream == "e" else self.main).get(index, seed)
        item["stream"] = stream
        return item
