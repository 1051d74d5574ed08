"""A WordPiece vocabulary trained on a corpus with the ``tokenizers`` library (BERT's recipe).

Used by stage-0 text pretraining to build a text tower from scratch, offline, for any language mix: the
normaliser lower-cases and cleans text as BERT does and puts spaces around every CJK ideograph, so Chinese
is split into one word per character and each character that occurs in the corpus gets its own token.
The result is a ``transformers`` fast tokenizer; ``save_pretrained`` writes a folder ``AutoTokenizer`` loads.
"""
from __future__ import annotations

from typing import Dict, Iterable

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
                              lowercase: bool = True, split_cjk_chars: bool = True):
    """A BERT-style fast tokenizer whose WordPiece vocabulary is learnt from ``texts``.

    ``vocab_size`` is an upper bound: a small corpus yields fewer tokens. Every character seen in the
    corpus is kept in the alphabet whatever ``min_frequency`` is, so none of them becomes [UNK]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"tokenizer vocab_size {vocab_size} is too small")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=split_cjk_chars,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##",
                                        show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    tok.model = models.WordPiece(vocab=_renumbered(tok.get_vocab()), unk_token="[UNK]", continuing_subword_prefix="##")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece(prefix="##")
    return BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase, tokenize_chinese_chars=split_cjk_chars,
                             unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                             mask_token="[MASK]")


def _renumbered(vocab: Dict[str, int]) -> Dict[str, int]:
    """The special tokens first, then every other token in sorted order.

    The trainer numbers the continuing-subword tokens (``##x``) in the iteration order of a hash map seeded
    anew in every process, so the same corpus gets other ids in another process, and a seeded model other
    initial weights per token. WordPiece splits words by longest match, whatever the ids, so renumbering
    changes no tokenisation; it makes the ids a function of the vocabulary alone. (Where two merges tie on
    their count, that same order can still pick a different merge and so a slightly different vocabulary.)"""
    rest = sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    return {t: i for i, t in enumerate([*SPECIAL_TOKENS, *rest])}
