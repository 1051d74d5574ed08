"""Text data of stage 0 (masked language modelling): corpus paragraphs, their masked batches, resumable order.

The batches a run sees are a function of (seed, epoch, position) plus the masking generator, whose state a
checkpoint carries (``MLMData.state_dict``): a run killed mid-epoch and resumed sees the same batches.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .ban import BanList
from .dataframes import read_captions, read_corpus

_logger = logging.getLogger(__name__)

CAPTION_COLUMNS = {"en": ["caption"], "zh": ["caption_zh"], "both": ["caption", "caption_zh"]}


def caption_texts(frame, language: str) -> List[str]:
    """The non-empty captions of a caption frame in ``language`` (en, zh, or both: each row's two texts)."""
    return [t for col in CAPTION_COLUMNS[language] if col in frame.columns for t in frame[col]
            if isinstance(t, str) and t]


def require_corpus(corpus: Sequence[str], caption_csvs: Sequence[str], demo: bool) -> None:
    """Refuse a stage-0 run without text before anything is loaded or written."""
    if not corpus and not caption_csvs and not demo:
        raise ValueError("text-pretrain needs a corpus: corpus=[dir_or_txt,...] and/or include_elite_captions, "
                         "or demo=true")
    missing = [p for p in list(corpus) + list(caption_csvs) if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"text-pretrain: corpus path not found: {', '.join(map(str, missing))}")


def collect_texts(corpus: Sequence[str], caption_csvs: Sequence[str], caption_language: str, *, demo_world=None,
                  ban=None, knowledge: str = "fundus_en", exact_ban: bool = False) -> List[str]:
    """Corpus paragraphs (+ caption texts of ``caption_csvs`` and of the demo world's elite sets), after the ban
    list when ``ban`` (a ``BanCfg``) has terms."""
    require_corpus(corpus, caption_csvs, demo_world is not None)
    sources = list(corpus)
    captions: List[str] = []
    if demo_world is not None:
        sources.append(str(demo_world.corpus_dir))
        captions += [c for csv in demo_world.elite_csvs.values()
                     for c in caption_texts(read_captions(csv), caption_language)]
    for csv in caption_csvs:
        captions += caption_texts(read_captions(csv), caption_language)
    texts = (read_corpus(sources) if sources else []) + captions
    bans = BanList.from_cfg(ban, knowledge, exact=exact_ban) if ban is not None else None
    if bans is not None:  # the same list pretraining builds from data.ban, knowledge base and bug_compat
        texts, report = bans.filter_corpus(texts)
        _logger.info("%s", report.summary())
    return texts


class Paragraphs(Dataset):
    """Tokenised paragraphs, padded to ``max_length``: the whole-word-mask collator needs offset mappings of
    equal length; pads are flagged in ``special_tokens_mask`` so they are never masked."""

    def __init__(self, texts: List[str], tokenizer, max_length: int):
        self.items = [tokenizer(t, truncation=True, max_length=max_length, padding="max_length",
                                return_offsets_mapping=True, return_special_tokens_mask=True) for t in texts]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict[str, list]:
        return dict(self.items[i])


def trim_padding(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drop the columns after the batch's longest text. Paragraphs are padded to ``context_length`` (the
    whole-word masking needs equal lengths) but the padding is masked out of attention and never a label:
    the loss is the same, and the encoder's cost follows the real lengths."""
    if "attention_mask" not in batch:
        return batch
    longest = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :longest].contiguous() if v.dim() == 2 and v.shape == batch["attention_mask"].shape else v
            for k, v in batch.items()}


class MaskingCollator:
    """transformers' MLM collator (whole-word masking: always [MASK], no random/kept tokens) seeded once, its
    generator state saved and restored with the run; right-padded batches are trimmed to their longest text."""

    def __init__(self, tokenizer, mlm_probability: float, whole_word_mask: bool, seed: int):
        from transformers import DataCollatorForLanguageModeling

        replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word_mask else {}
        self.collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability,
                                                       whole_word_mask=whole_word_mask, seed=seed, **replace)
        self.trim = getattr(tokenizer, "padding_side", "right") == "right"

    def __call__(self, items: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        batch = self.collate(items)
        return trim_padding(batch) if self.trim else batch

    def state_dict(self) -> Dict[str, Any]:
        g = self.collate.generator  # created by the collator at its first batch
        return {"generator": g.get_state() if isinstance(g, torch.Generator) else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("generator") is not None:
            self.collate.create_rng("pt")
            self.collate.generator.set_state(state["generator"])


def paragraph_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The paragraph order of one epoch on one rank, a function of (seed, epoch) alone.

    One process: the order a shuffling ``DataLoader`` with a generator seeded ``seed`` gives (the order stage 0
    always had), replayed up to ``epoch``: from that one generator each epoch's iterator draws a worker seed and
    a permutation, and its ``RandomSampler`` one more (empty) permutation when the epoch runs out. Several:
    ``DistributedSampler``'s (a permutation seeded ``seed + epoch``, whole rounds, rank-strided)."""
    if world_size == 1:
        g = torch.Generator().manual_seed(seed)
        for _ in range(epoch + 1):
            torch.empty((), dtype=torch.int64).random_(generator=g)
            order = torch.randperm(n, generator=g)
            torch.randperm(n, generator=g)
        return order
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    per_rank = n // world_size
    return order[: per_rank * world_size][rank::world_size]


class ParagraphBatches:
    """Batch sampler of whole batches (drop_last) in ``paragraph_order``; starts mid-epoch on resume."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return (self.n // self.world_size) // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[List[int]]:
        order = paragraph_order(self.n, self.seed, self.epoch, self.rank, self.world_size).tolist()
        for b in range(self.start_batch, len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]


@dataclass
class MLMData:
    """What the training loop needs of a stage-0 run (the same fields as the image-text ``TrainData``)."""

    sampler: ParagraphBatches
    loader: DataLoader
    collator: MaskingCollator
    val_loader: Optional[DataLoader]
    summary: Dict[str, Any] = field(default_factory=dict)
    vocab: Any = None

    def state_dict(self) -> Dict[str, Any]:
        return {"masking": self.collator.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.collator.load_state_dict(state["masking"])


def build_mlm_data(train_texts: List[str], val_texts: List[str], tokenizer, *, context_length: int, batch_size: int,
                   mlm_probability: float, whole_word_mask: bool, seed: int, rank: int = 0,
                   world_size: int = 1) -> MLMData:
    """Masked batches of the training paragraphs (masking seeded ``seed + rank``) and a validation loader
    (masking seeded apart from training, so the score does not depend on how long training ran)."""
    train = Paragraphs(train_texts, tokenizer, context_length)
    sampler = ParagraphBatches(len(train), batch_size, seed, rank, world_size)
    if len(sampler) == 0:
        raise ValueError(f"{len(train_texts)} training paragraphs are fewer than one batch of {batch_size}"
                         + (f" x {world_size} ranks" if world_size > 1 else ""))
    collator = MaskingCollator(tokenizer, mlm_probability, whole_word_mask, seed + rank)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collator)
    val_loader = DataLoader(Paragraphs(val_texts, tokenizer, context_length), batch_size=batch_size,
                            collate_fn=MaskingCollator(tokenizer, mlm_probability, whole_word_mask,
                                                       seed + 10_000)) if val_texts else None
    summary = {"train_paragraphs": len(train_texts), "val_paragraphs": len(val_texts),
               "batches_per_epoch": len(sampler), "micro_batch": batch_size}
    return MLMData(sampler, loader, collator, val_loader, summary)
