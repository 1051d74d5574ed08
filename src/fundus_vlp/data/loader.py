"""Assemble the training data of a run: sources -> ban filter -> datasets -> paired sampler -> DataLoader."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd
import torch
from torch.utils.data import DataLoader

from ..config import ModelCfg
from ..runtime.device import usable_cores
from .config import BatchPlan, DataNeeds
from .dataframes import DataFormatError, Problem, problems_message, read_captions, read_categorical
from .datasets import CaptionDataset, CategoricalDataset, ConcatParts, LabelVocab, TrainingDataset
from .samplers import PairedBatchSampler
from .transforms import build_transform

_logger = logging.getLogger(__name__)


def resolve_num_workers(requested: int, cores: Optional[int] = None) -> int:
    """``data.num_workers``; -1 (the default) picks it from the core count.

    The training step already uses every core through its intra-op threads; a loader worker decodes on
    those same cores. On 2 cores two workers doubled the vision backward (0.29 -> 0.66 s/step, ResNet-18 at
    128 px) and cost more than the decoding they took off the main process, so up to 4 cores the main
    process loads the data itself (and JPEGs are decoded at reduced size, see ``load_image``); above that,
    a quarter of the cores (at most 8) decode while the rest compute.
    """
    if requested >= 0:
        return requested
    cores = cores if cores is not None else usable_cores()
    return 0 if cores <= 4 else min(8, cores // 4)


def _single_threaded_worker(_: int) -> None:
    """Loader workers decode and resize small images; intra-op threads there would fight the training
    process for the same cores (on a 2-core machine that oversubscription costs several times the step time).
    Ctrl-C / SIGTERM are the training process's to handle (it finishes the step and writes a checkpoint):
    a worker that died of them would break the batch being loaded. Workers end with their parent."""
    import signal

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Collator:
    """Stacks images and tokenises texts in the loader workers; splits main and elite streams."""

    def __init__(self, tokenizer, num_labels: int = 0, caption_length: int = 0, text_padding: str = "longest"):
        self.tokenizer = tokenizer
        self.num_labels = num_labels
        self.caption_length = caption_length
        # "longest" unless the pooling reads padding positions (flair_compat), where it must match the model's
        self.text_padding = text_padding

    def _collate(self, items: List[Dict[str, Any]], captions: bool) -> Dict[str, torch.Tensor]:
        texts = [it["text"] for it in items]
        out = {
            "images": torch.stack([it["image"] for it in items]),
            "text": self.tokenizer(texts, padding=self.text_padding),
            "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
        }
        if self.num_labels:
            multi_hot = torch.zeros(len(items), self.num_labels)
            for row, it in enumerate(items):
                multi_hot[row, it["label_ids"]] = 1.0
            out["multi_hot"] = multi_hot
        if captions and self.caption_length:
            # padded to the longest caption (at most caption_length): the decoder's cost follows real lengths
            out["caption_ids"] = self.tokenizer(texts, context_length=self.caption_length, padding="longest")
        return out

    def __call__(self, items: List[Dict[str, Any]]) -> Dict[str, Any]:
        main = [it for it in items if it["stream"] == "p"]
        elite = [it for it in items if it["stream"] == "e"]
        batch: Dict[str, Any] = {"main": self._collate(main, captions=False)}
        if elite:
            batch["elite"] = self._collate(elite, captions=True)
        batch["skipped"] = [s for it in items for s in it["skipped"]]
        return batch


@dataclass
class TrainData:
    dataset: TrainingDataset
    sampler: PairedBatchSampler
    loader: DataLoader
    vocab: LabelVocab
    summary: Dict[str, Any] = field(default_factory=dict)


def _load_demo_sources(cfg) -> Dict[str, Any]:
    from ..demo_world import build_demo_world
    from ..demo_world.presets import demo_world_cfg

    # Chinese captions live in a bilingual world (the English-only world's files stay as they are)
    world = build_demo_world(demo_world_cfg(cfg.data.demo_size, cfg.data.demo_seed,
                                            chinese=cfg.data.caption_language != "en"))
    return {
        "public": [(world.public_csv, world.root)],
        "elite": [(world.elite_csvs[m], world.root) for m in cfg.data.elite_modalities if m in world.elite_csvs],
        "world": world,
    }


def _load_file_sources(cfg) -> Dict[str, Any]:
    public = [(df, src.root) for src in cfg.data.public for df in src.dataframes]
    elite = [(df, src.root) for src in cfg.data.elite if src.modality in cfg.data.elite_modalities
             for df in src.dataframes]
    return {"public": public, "elite": elite}


CHECK_HINT = ("\nRun `fundus-vlp pretrain --dry-run` (same config) or `fundus-vlp check-data` for the full list "
              "and a decode check of every image.")


def _read_with_root(pairs, reader, problems: List[Problem]) -> pd.DataFrame:
    """(csv, image root) pairs read with ``reader`` into one frame that remembers each row's root;
    the problems of every file (whole files and single rows) are appended to ``problems``."""
    from .check import file_problem

    frames = []
    for csv, root in pairs:
        try:
            frames.append(reader(csv, problems).assign(root=str(root)))
        except DataFormatError as exc:
            problems.append(file_problem(csv, exc))
    if not frames:
        return pd.DataFrame(columns=["image", "source", "row", "root"])
    return pd.concat(frames, ignore_index=True)


def _validate_paths(frame: pd.DataFrame, on_bad_image: str, what: str) -> Tuple[pd.DataFrame, List[Problem]]:
    """Every row's image path: inside its root, present, non-empty, readable (no decoding: seconds for 10^5
    rows). ``error``: the caller raises them all; ``skip``: the rows are dropped, counted and logged."""
    from .check import check_image_rows

    problems: List[Problem] = []
    keep = []
    for root, part in frame.groupby("root", sort=False):
        bad, positions = check_image_rows(part, root, decode=False)
        problems += bad
        drop = set(part.index[positions])
        keep += [i for i in part.index if i not in drop]
    if problems and on_bad_image == "skip":
        _logger.warning("%s: dropped %d row(s) whose image cannot be read (data.on_bad_image=skip):\n  %s%s", what,
                        len(problems), "\n  ".join(str(p) for p in problems[:20]),
                        "\n  ..." if len(problems) > 20 else "")
        return frame.loc[sorted(keep)].reset_index(drop=True), problems
    return frame, problems


def read_sources(cfg, sources: Dict[str, Any], use_elite: bool) -> Tuple[pd.DataFrame, Optional[pd.DataFrame],
                                                                         Dict[str, Any]]:
    """Read every dataframe of the run and validate every row before anything trains; all problems of all
    files are reported at once. Returns (public, elite or None, counts for the run summary)."""
    data = cfg.data
    parse: List[Problem] = []
    public = _read_with_root(sources["public"], lambda csv, pr: read_categorical(csv, data.encoding, pr), parse)
    elite = _read_with_root(sources["elite"], lambda csv, pr: read_captions(csv, data.on_empty_caption,
                                                                              data.encoding, pr), parse) \
        if use_elite else None
    if parse:  # a malformed dataframe is fixed in the file, whatever data.on_bad_image says
        raise DataFormatError(problems_message(parse, CHECK_HINT))
    public, bad_public = _validate_paths(public, data.on_bad_image, "public data")
    bad_elite: List[Problem] = []
    if elite is not None:
        elite, bad_elite = _validate_paths(elite, data.on_bad_image, "elite data")
    if data.on_bad_image == "error" and (bad_public or bad_elite):
        raise DataFormatError(problems_message(bad_public + bad_elite, "\n(data.on_bad_image=skip drops such rows)"
                                               + CHECK_HINT))
    for name, frame, pairs in (("public", public, sources["public"]), ("elite", elite, sources["elite"])):
        if frame is not None and len(frame) == 0:
            raise DataFormatError(f"no usable {name} rows left in {[str(c) for c, _ in pairs]}" + CHECK_HINT)
    counts = {"dataframes": len(sources["public"]) + (len(sources["elite"]) if use_elite else 0),
              "dropped_bad_rows": len(bad_public) + len(bad_elite)}
    return public, elite, counts


def _apply_ban(cfg, public: pd.DataFrame, elite: Optional[pd.DataFrame], knowledge, out_dir: Optional[Path]):
    ban_cfg = cfg.data.ban
    if not ban_cfg.terms:
        return public, elite, {}
    from .ban import BanList

    ban = BanList.from_cfg(ban_cfg, knowledge, exact=cfg.bug_compat.exact_match_ban)
    reports = {}
    if "categories" in ban_cfg.apply_to:
        public, reports["categories"] = ban.filter_categorical(public)
    if elite is not None and "elite" in ban_cfg.apply_to:
        elite, reports["elite"] = ban.filter_captions(elite)
    for name, report in reports.items():
        _logger.info("%s", report.summary())
        if out_dir is not None:
            report.to_json(Path(out_dir) / f"ban_report_{name}.json")
    return public, elite, {k: {"removed": r.n_removed, "kept": r.n_kept, "by_term": dict(r.by_term)}
                           for k, r in reports.items()}


def _caption_language_report(language: str, parts: List[CaptionDataset]) -> Dict[str, Any]:
    """Caption rows per language and the rows that fall back to the other language (logged, and a warning
    when the chosen language is missing from every row)."""
    if not parts:
        return {}
    counts = {k: sum(p.language_counts()[k] for p in parts) for k in ("both", "en_only", "zh_only", "fallback")}
    total = sum(len(p) for p in parts)
    report = {"language": language, "rows": total, **counts}
    if counts["fallback"]:
        level = logging.WARNING if counts["fallback"] == total and language != "both" else logging.INFO
        _logger.log(level, "caption_language=%s: %d of %d caption rows lack it and use the other language "
                    "(both: %d, English only: %d, Chinese only: %d)", language, counts["fallback"], total,
                    counts["both"], counts["en_only"], counts["zh_only"])
    return report


def _split_by_root(frame: pd.DataFrame):
    for root, part in frame.groupby("root", sort=False):
        yield root, part.drop(columns=["root"]).reset_index(drop=True)


def run_sources(cfg) -> Dict[str, Any]:
    """``{"public": [(csv, root)], "elite": [(csv, root)]}`` of a run (demo world or configured files)."""
    return _load_demo_sources(cfg) if cfg.data.source == "demo" else _load_file_sources(cfg)


def build_train_data(cfg, model_cfg: ModelCfg, tokenizer, needs: DataNeeds, batches: BatchPlan, rank: int = 0,
                     world_size: int = 1, out_dir: Optional[Path] = None, pin_memory: bool = False) -> TrainData:
    """Everything the trainer iterates over, shaped by the method's ``needs`` and the run's ``batches``."""
    needs_elite, pool_elite = needs.elite, needs.pool_elite
    sources = run_sources(cfg)
    if not sources["public"]:
        raise ValueError("no public dataframes configured (data.public[...].dataframes or data.source=demo)")
    use_elite = needs_elite or pool_elite
    if use_elite and not sources["elite"]:
        raise ValueError(f"method {cfg.method!r} needs elite image-caption pairs: configure data.elite "
                         f"(modalities {cfg.data.elite_modalities}) or data.source=demo")
    from .knowledge import KnowledgeBase

    knowledge = KnowledgeBase.load(cfg.data.prompt.knowledge)
    public, elite, read_counts = read_sources(cfg, sources, use_elite)
    public, elite, ban_counts = _apply_ban(cfg, public, elite, knowledge, out_dir)
    vocab = LabelVocab.from_frame(public)
    train_tf = build_transform(model_cfg.preprocess, train=True, aug=cfg.data.augment)
    elite_tf = train_tf if cfg.data.augment_elite else build_transform(model_cfg.preprocess, train=False)
    prompt = cfg.data.prompt
    main = [CategoricalDataset(part, root, train_tf, vocab, prompt.template, knowledge,
                               needs.augment_description and prompt.augment_description, prompt.description_mode,
                               prompt.skip_datasets, cfg.data.on_bad_image, cfg.data.max_image_pixels)
            for root, part in _split_by_root(public)]
    elite_parts = [CaptionDataset(part, root, elite_tf, cfg.data.on_bad_image, cfg.data.max_image_pixels,
                                  cfg.data.caption_language)
                   for root, part in _split_by_root(elite)] if elite is not None else []
    languages = _caption_language_report(cfg.data.caption_language, elite_parts)
    elite_ds = ConcatParts(elite_parts) if elite_parts else None
    if pool_elite:
        main = main + elite_parts
    dataset = TrainingDataset(main, elite_ds if needs_elite else None)

    groups = None
    if cfg.data.balance:
        groups, offset = [], 0
        for part in main:
            if isinstance(part, CategoricalDataset):
                groups += [[offset + i for i in g] for g in part.groups().values()]
            else:
                groups.append(list(range(offset, offset + len(part))))
            offset += len(part)
    micro, elite_bs = batches.micro, batches.elite_micro
    sampler = PairedBatchSampler(dataset.main_size, micro, len(elite_ds) if (needs_elite and elite_ds) else 0,
                                 elite_bs, rank, world_size, cfg.train.seed, groups)
    caption_len = model_cfg.decoder.max_length if model_cfg.decoder.enabled else 0
    padding = model_cfg.text.padding if model_cfg.text.pooling == "flair_compat" else "longest"
    collator = Collator(tokenizer, len(vocab) if needs.multi_hot else 0, caption_len, padding)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collator,
                        num_workers=resolve_num_workers(cfg.data.num_workers),
                        pin_memory=pin_memory, persistent_workers=False, worker_init_fn=_single_threaded_worker)
    summary = {
        **read_counts, "public_rows": len(public), "elite_rows": 0 if elite is None else len(elite), "classes": len(vocab),
        "main_stream": dataset.main_size, "batches_per_epoch": len(sampler), "micro_batch": micro,
        "elite_micro_batch": elite_bs, "ban": ban_counts,
    }
    if languages:
        summary["caption_language"] = languages
    if "world" in sources:
        summary["demo_world"] = str(sources["world"].root)
    return TrainData(dataset, sampler, loader, vocab, summary)


_SUMMARY_LABELS = (("dataframes", "dataframes"), ("public_rows", "public rows"), ("elite_rows", "elite rows"),
                   ("dropped_bad_rows", "rows dropped (bad image, data.on_bad_image=skip)"),
                   ("classes", "classes"), ("main_stream", "main stream samples"),
                   ("batches_per_epoch", "micro-batches per epoch"), ("micro_batch", "micro-batch"),
                   ("elite_micro_batch", "elite micro-batch"), ("demo_world", "demo world"))


def format_summary(summary: Dict[str, Any]) -> str:
    """The data summary as aligned ``label: value`` lines (logs and ``pretrain --dry-run``)."""
    lines = []
    for key, label in _SUMMARY_LABELS:
        if key in summary:
            value = summary[key]
            lines.append(f"  {label + ':':<50} {value:,}" if isinstance(value, int) else f"  {label + ':':<50} {value}")
    for name, counts in (summary.get("ban") or {}).items():
        terms = ", ".join(f"{t} {n}" for t, n in counts.get("by_term", {}).items())
        lines.append(f"  {'ban (' + name + '):':<50} removed {counts['removed']:,}, kept {counts['kept']:,}"
                     + (f" ({terms})" if terms else ""))
    return "\n".join(lines)
