"""FLAIR (and KeepFIT v1, which shares its layout) released weights -> a fundus-vlp model folder.

See docs/reference.md#flair-released-weights.

FLAIR's state dict has ``vision_model.model.*`` (a torchvision ResNet-50 without ``fc``; timm's ResNet
uses the same key names), ``vision_model.projection_head_vision.projection.weight``,
``text_model.model.*`` (a Hugging Face BertModel), ``text_model.projection_head_text.projection.weight``
and ``logit_scale``. KeepFIT v1 checkpoints use the same names plus the revision attention, which a
release does not need. Keys are renamed, ``position_ids`` (old transformers) and the unused BERT pooler
are dropped, everything else must match exactly (unlike the official non-strict loader).
The text tower's architecture is read off the checkpoint, so importing needs no network: only the
vocabulary comes from a tokenizer (``--tokenizer``, or the Bio_ClinicalBERT tokenizer in the local cache).
The imported model uses FLAIR's text pooling and padding (``flair_compat``, pad to the longest prompt) and
its [0, 1] 512-px canvas, so its zero-shot outputs are FLAIR's.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional

import torch

from ..hub import CheckpointError
from .checkpoint import Placement, load_strict, read_checkpoint, unwrap
from .towers import bert_config_from_state, check_vocabulary

_logger = logging.getLogger(__name__)

_PREFIXES = (
    ("vision_model.projection_head_vision.", "visual.head."),
    ("vision_model.model.", "visual.trunk."),
    ("text_model.projection_head_text.", "text.head."),
    ("text_model.model.", "text.transformer."),
)
_DROPPED = ("text_model.model.embeddings.position_ids", "text_model.model.pooler.")
_WORD_EMBEDDINGS = "text.transformer.embeddings.word_embeddings.weight"
CARD = {
    "flair": {"paper": "Silva-Rodríguez et al., A foundation language-image model of the retina (FLAIR), "
                       "Medical Image Analysis 99, 103357 (2025)",
              "license": "see the FLAIR release (github.com/jusiro/FLAIR)",
              "official_code": "github.com/jusiro/FLAIR @ d6652d53389ff49e5f73efaccf4246e9de88d1a3",
              "source": "FLAIR release (flair_resnet.pth, or Hugging Face jusiro/FLAIR model.safetensors)"},
    "keepfit": {"paper": "Wu et al., Mitigating data scarcity by leveraging expert knowledge (KeepFIT), MICCAI 2024",
                "license": "see the KeepFIT release",
                "official_code": "FLAIR layout, checked against github.com/jusiro/FLAIR @ "
                                 "d6652d53389ff49e5f73efaccf4246e9de88d1a3",
                "source": "KeepFIT v1 release"},
}


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    state, _ = unwrap(read_checkpoint(path), path, ("state_dict",))
    if "logit_scale" not in {k.removeprefix("module.") for k in state}:
        raise CheckpointError(f"{path}: not a FLAIR/KeepFIT state dict (no logit_scale)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def flair_to_fundus_vlp(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename FLAIR keys to ours; drop position ids and the unused pooler.

    Training-only top-level modules (KeepFIT's revision attention) are left out with a log line; any
    other key under the two towers that we cannot place is an error.
    """
    out, skipped = {}, []
    for key, value in state.items():
        if key == "logit_scale":
            out[key] = value.reshape(())
            continue
        if key.startswith(_DROPPED):
            continue
        for theirs, ours in _PREFIXES:
            if key.startswith(theirs):
                out[ours + key[len(theirs):]] = value
                break
        else:
            if key.startswith(("vision_model.", "text_model.")):
                raise CheckpointError(f"unexpected key {key!r}: not a FLAIR/KeepFIT checkpoint layout")
            skipped.append(key)
    if skipped:
        _logger.info("not part of the dual encoder, left out: %s", ", ".join(sorted(skipped)[:10]))
    return out


def _tokenizer_settings(tokenizer: str | Path | None) -> Dict[str, str]:
    if tokenizer is None:
        return {}
    folder = Path(tokenizer)
    if not folder.exists():
        raise CheckpointError(f"{folder}: tokenizer folder not found")
    return {"text.hf_tokenizer_name": str(folder)}


def import_flair(weights: str | Path, out_dir: str | Path, model: str = "rn50-bioclinicalbert",
                 tokenizer: str | Path | None = None, card: Optional[dict] = None, **overrides):
    """Build ``model`` with FLAIR's conventions, load the renamed weights strictly, save a release folder.

    The text tower's shape (width, layers, embedding rows, ...) is read from the checkpoint; ``tokenizer`` is a
    local tokenizer folder or vocab.txt for machines without the tokenizer in their cache. The text embedding
    table gets as many rows as the checkpoint has (28,996 for Bio_ClinicalBERT), so any tokenizer whose ids
    fit the table works.
    """
    from ..factory import create_model, get_tokenizer, resolve_model_config
    from .towers import load_tokenizer

    source = Path(weights)
    state = flair_to_fundus_vlp(_read_state_dict(source))
    if _WORD_EMBEDDINGS not in state:
        raise CheckpointError(f"{weights}: no text word-embedding table "
                              "(text_model.model.embeddings.word_embeddings.weight)")
    settings = {"text.pooling": "flair_compat", "text.padding": "longest", "text.pretrained": False,
                "preprocess.mean": None, "preprocess.std": None, "preprocess.resize_mode": "pad",
                **_tokenizer_settings(tokenizer), **overrides}
    base = resolve_model_config(model, **settings)
    heads = base.text.config_overrides.get("num_attention_heads")
    settings["text.hf_config"] = bert_config_from_state(state, "text.transformer.", source, heads)
    rows = int(state[_WORD_EMBEDDINGS].shape[0])
    folder_tokenizer = tokenizer is not None and (Path(tokenizer) / "tokenizer_config.json").is_file()
    if tokenizer is not None and not folder_tokenizer:  # a bare vocab.txt (or a folder with only that)
        tok = load_tokenizer(tokenizer, lowercase=True, context_length=base.text.context_length, padding="longest")
    else:
        tok = get_tokenizer(model, **settings)
    check_vocabulary(tok, rows, source)
    fundus = create_model(model, tokenizer=tok, vocab_size=rows, **settings)
    placement = Placement(source, state=dict(state), origin={k: k for k in state})
    try:
        load_strict(fundus, placement)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (architecture {model})") from None
    fundus.save_pretrained(out_dir, card=card or {**CARD["flair"], "title": "FLAIR (imported)",
                                                   "weights_file": source.name,
                                                   "description": f"FLAIR weights imported from {source.name}."})
    return fundus


def import_flair_format(weights, out_dir, tokenizer=None, variant=None):
    return import_flair(weights, out_dir, tokenizer=tokenizer)


def import_keepfit_format(weights, out_dir, tokenizer=None, variant=None):
    name = Path(weights).name
    return import_flair(weights, out_dir, tokenizer=tokenizer,
                        card={**CARD["keepfit"], "title": "KeepFIT v1 (imported)", "weights_file": name,
                              "description": f"KeepFIT v1 weights imported from {name} (FLAIR layout; the "
                                             "training-only revision attention is left out)."})
