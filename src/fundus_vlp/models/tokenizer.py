"""Tokenizer wrapper: ``list[str] -> LongTensor[B, L]`` (open_clip convention).

The text tower derives its attention mask from ``pad_token_id``, so batches stay plain tensors that
collate, gather and shard easily.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import torch

from ..runtime.sources import load_from_hf, resolve_hf_source

_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")  # spaces between two CJK characters or CJK punctuation
_SPACES = re.compile(r"\s{2,}")


def _first_token_id(preferred: int | None, fallback: int | None, missing: str) -> int:
    """The preferred special token's id, else the fallback's (vocabularies name caption start/end differently)."""
    tok = preferred if preferred is not None else fallback
    if tok is None:
        raise ValueError(f"tokenizer has {missing}")
    return int(tok)


def _holds_only_wordpiece_vocab(folder: Path) -> bool:
    """A folder with BERT's ``vocab.txt`` but nothing that names a tokenizer class (as some released models
    ship it): ``AutoTokenizer`` cannot pick a class for it."""
    if not (folder / "vocab.txt").is_file() or any((folder / f).is_file() for f in ("tokenizer.json",
                                                                                    "tokenizer_config.json")):
        return False
    config = folder / "config.json"
    if not config.is_file():
        return True
    try:
        return "model_type" not in json.loads(config.read_text())
    except (ValueError, OSError):
        return True


def load_hf_tokenizer(name_or_path: str):
    """The ``transformers`` tokenizer of a Hub name or local folder; a folder holding only ``vocab.txt`` is read
    as a BERT WordPiece vocabulary (lower-cased, BERT's default), every word of it loaded."""
    from transformers import AutoTokenizer

    folder = Path(resolve_hf_source(name_or_path))
    if folder.is_dir() and _holds_only_wordpiece_vocab(folder):
        return wordpiece_from_vocab(folder / "vocab.txt", lowercase=True)
    return load_from_hf(AutoTokenizer.from_pretrained, name_or_path, "tokenizer")


def wordpiece_from_vocab(vocab: Path, lowercase: bool):
    """A BERT WordPiece tokenizer holding every line of ``vocab`` (one token per CJK character)."""
    from transformers import BertTokenizerFast

    lines = [ln.strip() for ln in vocab.read_text(encoding="utf-8").splitlines()]  # CRLF copies read the same
    # transformers 5 takes the vocabulary as `vocab`; `vocab_file=` is silently ignored (every id [UNK])
    return BertTokenizerFast(vocab={tok: i for i, tok in enumerate(lines) if tok}, do_lower_case=lowercase,
                             tokenize_chinese_chars=True, strip_accents=None)


def count_unknown(hf_tokenizer, texts: Sequence[str]) -> Tuple[int, int]:
    """(tokens that are [UNK], all tokens) of ``texts``: special tokens excluded, no truncation."""
    unk = hf_tokenizer.unk_token_id
    ids = hf_tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []
    return (sum(row.count(unk) for row in ids) if unk is not None else 0), sum(len(row) for row in ids)


class Tokenizer:
    """Pads to a fixed ``context_length`` by default, so a text's ids never depend on its batch-mates."""

    def __init__(self, hf_tokenizer, context_length: int = 77, padding: str = "max_length",
                 normalize: Sequence[str] = ()):
        if hf_tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; the text tower needs one to build attention masks")
        self.hf = hf_tokenizer
        self.context_length = context_length
        self.padding = padding
        self.normalize = tuple(normalize)  # TextCfg.text_normalize: steps applied to each text first

    @classmethod
    def from_pretrained(cls, name_or_path: str, context_length: int = 77, padding: str = "max_length",
                        normalize: Sequence[str] = ()) -> "Tokenizer":
        return cls(load_hf_tokenizer(name_or_path), context_length, padding, normalize)

    def normalized(self, text: str) -> str:
        """Chinese-CLIP's text clean-up: lower case, and curly double quotes as ASCII ones."""
        if "lower" in self.normalize:
            text = text.lower()
        if "ascii_quotes" in self.normalize:
            text = text.replace("\u201c", '"').replace("\u201d", '"')
        return text

    @property
    def pad_token_id(self) -> int:
        return int(self.hf.pad_token_id)

    @property
    def bos_token_id(self) -> int:
        """Start token for captions: [CLS] for BERT-style vocabularies."""
        return _first_token_id(self.hf.cls_token_id, self.hf.bos_token_id, "neither a CLS nor a BOS token")

    @property
    def eos_token_id(self) -> int:
        """End token for captions: [SEP] for BERT-style vocabularies."""
        return _first_token_id(self.hf.sep_token_id, self.hf.eos_token_id, "neither a SEP nor an EOS token")

    @property
    def mask_token_id(self) -> int | None:
        return self.hf.mask_token_id

    def __len__(self) -> int:
        return len(self.hf)

    def __call__(self, texts: Union[str, Sequence[str]], context_length: int | None = None,
                 padding: str | None = None) -> torch.Tensor:
        """Token ids B×L. ``padding="longest"`` pads to the longest text of this call only: with masked
        pooling the embeddings are the same, and short prompts cost much less (training collation)."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        enc = self.hf(
            [self.normalized(t) for t in texts],
            padding=padding or self.padding,
            truncation=True,
            max_length=length,
            return_tensors="pt",
        )
        return enc["input_ids"]

    def unknown_share(self, texts: Sequence[str]) -> float:
        """The share of the tokens of ``texts`` (special tokens excluded, no truncation) that are [UNK]:
        text the vocabulary cannot represent (e.g. Chinese with an English-only vocabulary)."""
        unknown, total = count_unknown(self.hf, texts)
        return unknown / total if total else 0.0

    def with_characters_of(self, texts: Sequence[str]) -> Tuple["Tokenizer", List[str]]:
        """A copy that also writes the one-character words of ``texts`` this vocabulary maps to [UNK] (Chinese
        characters and punctuation, which WordPiece splits off as words of their own), one new token each, and
        those characters. For a model whose token embeddings are new (a fresh caption decoder): a report it
        learns from then holds no such [UNK], which decoding would drop from what it writes. A longer unknown
        word stays [UNK]: a character added as a token would split every word that holds it."""
        unk = self.hf.unk_token_id
        normalized = [self.normalized(t) for t in texts]
        enc = self.hf(normalized, add_special_tokens=False, return_offsets_mapping=True) if normalized else None
        rows = zip(normalized, enc["input_ids"], enc["offset_mapping"]) if enc else ()
        missing = sorted({text[a:b] for text, ids, offsets in rows
                          for i, (a, b) in zip(ids, offsets) if i == unk and b - a == 1})
        if not missing:
            return self, []
        hf = copy.deepcopy(self.hf)
        hf.add_tokens(missing)
        return Tokenizer(hf, self.context_length, self.padding, self.normalize), missing

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        # WordPiece decoders put a space between every token; Chinese is written without them
        # (added tokens, e.g. a fresh decoder's extra characters, bring spaces of their own)
        return _SPACES.sub(" ", _CJK_GAP.sub("", self.hf.decode(ids, skip_special_tokens=True))).strip()

    def batch_decode(self, ids: torch.Tensor) -> List[str]:
        return [self.decode(row) for row in ids]

    def save_pretrained(self, directory: str | Path) -> None:
        self.hf.save_pretrained(str(directory))
