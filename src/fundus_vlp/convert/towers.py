"""Pieces shared by the importers: a BERT config read off the weights, the tokenizer from a local vocabulary,
building the model from a config and writing the release folder."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..config import ModelCfg
from ..hub import CheckpointError
from ..models.tokenizer import Tokenizer, wordpiece_from_vocab
from .checkpoint import Placement, State, count_layers, require

_logger = logging.getLogger(__name__)

HEAD_WIDTH = 64  # BERT and CLIP ViTs use 64-wide attention heads; the weights do not record the head count


def bert_config_from_state(state: State, prefix: str, source: Path, num_heads: Optional[int] = None) -> Dict[str, Any]:
    """The Hugging Face ``BertConfig`` (as a dict) of the BERT whose tensors are ``{prefix}embeddings...``: sizes
    are read off the shapes; the head count is ``num_heads`` or width / 64; the rest are BERT's defaults (GELU,
    LayerNorm eps 1e-12), which the BERTs of FLAIR, KeepFIT, ViLReF and RET-CLIP all use."""
    from transformers import BertConfig

    words = require(state, f"{prefix}embeddings.word_embeddings.weight", source)
    hidden = int(words.shape[1])
    layers = count_layers(state, f"{prefix}encoder.layer.")
    if layers == 0:
        raise CheckpointError(f"{source}: no text encoder layers under {prefix}encoder.layer.")
    heads = num_heads or max(1, hidden // HEAD_WIDTH)
    if hidden % heads:
        raise CheckpointError(f"{source}: text width {hidden} is not a multiple of {heads} heads")
    config = BertConfig(
        vocab_size=int(words.shape[0]), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=int(require(state, f"{prefix}encoder.layer.0.intermediate.dense.weight", source).shape[0]),
        max_position_embeddings=int(require(state, f"{prefix}embeddings.position_embeddings.weight", source).shape[0]),
        type_vocab_size=int(require(state, f"{prefix}embeddings.token_type_embeddings.weight", source).shape[0]),
        hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0)
    return config.to_dict()


def load_tokenizer(path: str | Path, lowercase: bool, context_length: int, padding: str = "max_length",
                   normalize: Sequence[str] = ()) -> Tokenizer:
    """A tokenizer folder (``tokenizer_config.json`` / ``tokenizer.json``), or a WordPiece ``vocab.txt`` (the file
    or a folder holding it) made into a BERT tokenizer with ``lowercase`` and one token per CJK character."""
    from transformers import AutoTokenizer

    path = Path(path)
    if path.is_dir() and any((path / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json")):
        try:
            hf = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: tokenizer files unreadable ({exc})") from exc
        return Tokenizer(hf, context_length, padding, normalize)
    vocab = path / "vocab.txt" if path.is_dir() else path
    if not vocab.is_file():
        raise CheckpointError(f"{path}: no tokenizer here: give a tokenizer folder or the model's vocab.txt")
    lines = {ln.strip() for ln in vocab.read_text(encoding="utf-8").splitlines()}
    if "[PAD]" not in lines or "[UNK]" not in lines:
        raise CheckpointError(f"{vocab}: not a BERT WordPiece vocabulary (no [PAD]/[UNK] entry)")
    return Tokenizer(wordpiece_from_vocab(vocab, lowercase), context_length, padding, normalize)


def check_vocabulary(tokenizer: Tokenizer, rows: int, source: Path) -> None:
    if len(tokenizer) > rows:
        raise CheckpointError(f"{source}: the tokenizer has {len(tokenizer)} tokens but the checkpoint's text "
                              f"embedding table only {rows} rows; use the tokenizer the weights were trained with")


def build(cfg: ModelCfg, tokenizer: Optional[Tokenizer], vocab_rows: Optional[int] = None):
    """The fundus-vlp model of ``cfg`` (random weights until the placement is loaded)."""
    from ..factory import create_model

    return create_model(cfg, tokenizer=tokenizer, vocab_size=vocab_rows)


def save_release(model, out_dir: str | Path, placement: Placement, card: Dict[str, Any]) -> Path:
    if placement.dropped:
        _logger.info("%s: %d tensor(s) not part of the imported model, left out: %s%s", placement.source,
                     len(placement.dropped), ", ".join(sorted(placement.dropped)[:8]),
                     " ..." if len(placement.dropped) > 8 else "")
    model.eval()
    return model.save_pretrained(out_dir, card=card)
