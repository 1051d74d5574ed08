"""KeepFIT V2 stage 0: whole-word masked language modelling of the text tower on ophthalmic text.

As RetCoP's "Step 0" (inferred for V2, docs/reference.md#keepfit-v2-inferred): a transformers MLM head and the
whole-word-mask collator on paragraphs of a text corpus. The output folder is a standard Hugging Face model folder
(MLM model + tokenizer); ``AutoModel.from_pretrained(folder)`` returns its encoder, so any model
config can use it as the text tower: ``model.text.hf_model_name=<folder>``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ..data.ban import BanList
from ..data.dataframes import read_captions, read_corpus
from ..hub import require_safe_weights
from ..models.tokenizer import load_hf_tokenizer
from ..runtime.files import atomic_dir
from ..runtime.sources import resolve_hf_source
from ..runtime import distributed as dist
from .config import FROM_SCRATCH_BERT, TextPretrainCfg
from .logger import MetricsWriter
from .optim import build_optimizer, build_scheduler
from .rundir import prepare_run_dir, read_run_id, releasing_run_dirs
from ..runtime.seed import rng_for, seed_everything

_logger = logging.getLogger(__name__)


@dataclass
class TextPretrainResult:
    run_dir: Path
    model_dir: Path
    steps: int
    train_loss: float
    val_loss: float
    val_masked_accuracy: float
    seconds: float


class _Paragraphs(Dataset):
    def __init__(self, texts: List[str], tokenizer, max_length: int):
        # fixed-length padding: the whole-word-mask collator needs offset mappings of equal length;
        # pads are flagged in special_tokens_mask so they are never masked
        self.items = [tokenizer(t, truncation=True, max_length=max_length, padding="max_length",
                                return_offsets_mapping=True, return_special_tokens_mask=True) for t in texts]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict[str, list]:
        return dict(self.items[i])


def caption_texts(frame, language: str) -> List[str]:
    """The non-empty captions of a caption frame in ``language`` (en, zh, or both: each row's two texts)."""
    columns = {"en": ["caption"], "zh": ["caption_zh"], "both": ["caption", "caption_zh"]}[language]
    return [t for col in columns if col in frame.columns for t in frame[col] if isinstance(t, str) and t]


def collect_texts(cfg: TextPretrainCfg) -> List[str]:
    """Corpus paragraphs (+ elite captions), after the ban list when one is configured."""
    sources = list(cfg.corpus)
    captions: List[str] = []
    if cfg.demo:
        from ..demo_world.presets import demo_world_cfg
        from ..demo_world import build_demo_world

        world = build_demo_world(demo_world_cfg(cfg.demo_size, cfg.demo_seed, chinese=cfg.caption_language != "en"))
        sources.append(str(world.corpus_dir))
        captions += [c for csv in world.elite_csvs.values() for c in caption_texts(read_captions(csv), cfg.caption_language)]
    for csv in cfg.include_elite_captions:
        captions += caption_texts(read_captions(csv), cfg.caption_language)
    if not sources and not captions:
        raise ValueError("text-pretrain needs a corpus: corpus=[dir_or_txt,...] and/or include_elite_captions, or demo=true")
    texts = (read_corpus(sources) if sources else []) + captions
    ban = BanList.from_cfg(cfg.ban, cfg.knowledge, exact=cfg.bug_compat.exact_match_ban)
    if ban is not None:  # the same list pretraining builds from data.ban, knowledge base and bug_compat
        texts, report = ban.filter_corpus(texts)
        _logger.info("%s", report.summary())
    return texts


def _collator(tokenizer, cfg: TextPretrainCfg, seed: int):
    from transformers import DataCollatorForLanguageModeling

    # transformers' whole-word masking always uses [MASK] (no random/kept tokens); say so explicitly
    replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if cfg.whole_word_mask else {}
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability,
                                              whole_word_mask=cfg.whole_word_mask, seed=seed, **replace)
    if getattr(tokenizer, "padding_side", "right") != "right":
        return collate
    return lambda items: trim_padding(collate(items))


def trim_padding(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drop the columns after the batch's longest text. Paragraphs are padded to ``context_length`` (the
    whole-word masking needs equal lengths) but the padding is masked out of attention and never a label:
    the loss is the same, and the encoder's cost follows the real lengths."""
    if "attention_mask" not in batch:
        return batch
    longest = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :longest].contiguous() if v.dim() == 2 and v.shape == batch["attention_mask"].shape else v
            for k, v in batch.items()}


def _mlm_head(model):
    """The prediction head of a transformers MLM model (BERT: ``cls``; RoBERTa-style: ``lm_head``)."""
    for name in ("cls", "lm_head", "predictions"):
        head = getattr(model, name, None)
        if head is not None:
            return head
    return None


def mlm_forward(model, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, logits at masked positions, their labels).

    Only the ~15 % masked positions go through the vocabulary projection (sparse prediction, as fairseq
    does): identical loss to the full ``model(**batch).loss`` at a fraction of the cost, because the
    B×L×V logits dominate the step for small encoders.
    """
    labels = batch["labels"]
    head = _mlm_head(model)
    if head is None:  # unknown architecture: the dense path
        out = model(**batch)
        mask = labels != -100
        return out.loss, out.logits[mask], labels[mask]
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                              token_type_ids=batch.get("token_type_ids")).last_hidden_state
    mask = labels != -100
    logits = head(hidden[mask])
    return torch.nn.functional.cross_entropy(logits.float(), labels[mask]), logits, labels[mask]


class SparseMLM(torch.nn.Module):
    """The MLM model behind one forward that returns the loss (what DDP wraps)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return mlm_forward(self.model, batch)[0]


def masked_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(correct, total) over masked positions; `logits`/`labels` are already restricted to them."""
    return int((logits.argmax(-1) == labels).sum()), int(labels.numel())


@torch.no_grad()
def evaluate_mlm(model, loader, device) -> tuple[float, float]:
    model.eval()
    total_loss, total_tokens, correct = 0.0, 0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, logits, labels = mlm_forward(model, batch)
        c, n = masked_accuracy(logits, labels)
        total_loss += float(loss) * n
        total_tokens += n
        correct += c
    model.train()
    return total_loss / max(total_tokens, 1), correct / max(total_tokens, 1)


def _trained_tokenizer(cfg: TextPretrainCfg, texts: List[str], run_dir: Path, is_main: bool):
    """A WordPiece vocabulary learnt from ``texts`` by the main process and loaded from disk by every rank."""
    from transformers import AutoTokenizer

    from ..models.wordpiece import train_wordpiece_tokenizer

    folder = run_dir / "tokenizer"
    if is_main:
        t = cfg.tokenizer
        tokenizer = train_wordpiece_tokenizer(texts, t.vocab_size, t.min_frequency, t.lowercase, t.split_cjk_chars)
        tokenizer.model_max_length = cfg.scratch.max_position
        tokenizer.save_pretrained(folder)
        _logger.info("trained a WordPiece vocabulary of %d tokens on %d paragraphs", len(tokenizer), len(texts))
    dist.barrier()
    return AutoTokenizer.from_pretrained(str(folder))


def _scratch_bert(cfg: TextPretrainCfg, tokenizer):
    """A freshly initialised BERT masked-LM sized by ``cfg.scratch`` for ``tokenizer``'s vocabulary."""
    from transformers import BertConfig, BertForMaskedLM

    s = cfg.scratch
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=s.hidden_size, num_hidden_layers=s.num_layers,
                        num_attention_heads=s.num_heads, intermediate_size=s.intermediate_size,
                        max_position_embeddings=s.max_position, hidden_dropout_prob=s.dropout,
                        attention_probs_dropout_prob=s.dropout, pad_token_id=tokenizer.pad_token_id)
    return BertForMaskedLM(config)


def text_pretrain(cfg: TextPretrainCfg) -> TextPretrainResult:
    with releasing_run_dirs():
        return _text_pretrain(cfg)


def _text_pretrain(cfg: TextPretrainCfg) -> TextPretrainResult:
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    texts = collect_texts(cfg)  # validate the corpus before anything is loaded or written
    env = dist.init_distributed(cfg.device)
    seed_everything(cfg.seed, env.rank)
    run_dir = prepare_run_dir(cfg, env, prefix="text-pretrain")
    order = rng_for(cfg.seed, "mlm-split").permutation(len(texts))
    n_val = int(round(len(texts) * cfg.val_fraction)) if len(texts) > 10 else 0
    val_texts = [texts[i] for i in order[:n_val]]
    train_texts = [texts[i] for i in order[n_val:]]
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if cfg.text_model == FROM_SCRATCH_BERT:  # vocabulary from the training paragraphs only, then a new encoder
        tokenizer = _trained_tokenizer(cfg, train_texts, run_dir, env.is_main)
        model = _scratch_bert(cfg, tokenizer).to(env.device)
    else:
        source = resolve_hf_source(cfg.text_model)
        require_safe_weights(source)  # a stage-0 folder to continue from: never unpickled unsafely
        tokenizer = load_hf_tokenizer(source)
        model = AutoModelForMaskedLM.from_pretrained(source).to(env.device)  # a missing MLM head is initialised
    collator = _collator(tokenizer, cfg, cfg.seed + env.rank)
    train_ds = _Paragraphs(train_texts, tokenizer, cfg.context_length)
    sampler = DistributedSampler(train_ds, env.world_size, env.rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True) if env.is_distributed else None
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                        collate_fn=collator, drop_last=True, generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = DataLoader(_Paragraphs(val_texts, tokenizer, cfg.context_length), batch_size=cfg.batch_size,
                            collate_fn=_collator(tokenizer, cfg, cfg.seed + 10_000))
    if len(loader) == 0:
        raise ValueError(f"{len(train_texts)} training paragraphs are fewer than one batch of {cfg.batch_size}")
    optimizer = build_optimizer(model, cfg.optim)
    total = len(loader) * cfg.epochs
    total = min(total, cfg.max_steps) if cfg.max_steps > 0 else total
    scheduler = build_scheduler(optimizer, cfg.optim, len(loader), total)
    task = SparseMLM(model)
    wrapped = torch.nn.parallel.DistributedDataParallel(task) if env.is_distributed else task
    metrics = MetricsWriter(run_dir / "metrics.jsonl", env.is_main, run_id=read_run_id(run_dir) if env.is_main else "")
    _logger.info("text-pretrain: %d train / %d val paragraphs, %d steps, model %s", len(train_texts), len(val_texts),
                 total, cfg.text_model)
    step, loss_value, t0 = 0, math.nan, time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.to(env.device) for k, v in batch.items()}
            loss = wrapped(batch)
            loss.backward()
            if cfg.optim.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            loss_value = float(loss.detach())
            if step % cfg.log_every == 0 or step == total:
                metrics.write({"kind": "train", "step": step, "epoch": epoch, "loss": loss_value,
                               "lr": optimizer.param_groups[0]["lr"]})
                _logger.info("mlm step %d/%d epoch %d loss %.4f", step, total, epoch, loss_value)
            if step >= total:
                break
        if step >= total:
            break
    val_loss, val_acc = evaluate_mlm(model, val_loader, env.device) if val_texts else (math.nan, math.nan)
    seconds = time.perf_counter() - t0
    metrics.write({"kind": "val", "step": step, "val_loss": val_loss, "val_masked_accuracy": val_acc})
    model_dir = run_dir / "text_model"
    if env.is_main:
        with atomic_dir(model_dir, needed=sum(p.numel() * p.element_size() for p in model.parameters())) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        _logger.info("text tower saved to %s (val MLM loss %.3f, masked-token accuracy %.3f); use it with "
                     "model.text.hf_model_name=%s", model_dir, val_loss, val_acc, model_dir)
    dist.barrier()
    metrics.close()
    dist.cleanup()
    return TextPretrainResult(run_dir, model_dir, step, loss_value, val_loss, val_acc, seconds)
