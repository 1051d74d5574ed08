"""Import released FLAIR (and KeepFIT v1) weights into a fundus-vlp model folder (flair.md §4, §13).

FLAIR's state dict has ``vision_model.model.*`` (a torchvision ResNet-50 without ``fc``; timm's ResNet
uses the same key names), ``vision_model.projection_head_vision.projection.weight``,
``text_model.model.*`` (a Hugging Face BertModel), ``text_model.projection_head_text.projection.weight``
and ``logit_scale``. KeepFIT v1 checkpoints use the same names plus the revision attention, which a
release does not need. Keys are renamed, ``position_ids`` (old transformers) and the unused BERT pooler
are dropped, everything else must match exactly (``strict=True``, unlike the official loader,
flair.md §11.14). The imported model uses FLAIR's text pooling and padding (``flair_compat``,
pad to the longest prompt) and its [0, 1] 512-px canvas, so its zero-shot outputs are FLAIR's.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

import torch

from .hub import CheckpointError

_logger = logging.getLogger(__name__)

_PREFIXES = (
    ("vision_model.projection_head_vision.", "visual.head."),
    ("vision_model.model.", "visual.trunk."),
    ("text_model.projection_head_text.", "text.head."),
    ("text_model.model.", "text.transformer."),
)
_DROPPED = ("text_model.model.embeddings.position_ids", "text_model.model.pooler.")


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle objects
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "logit_scale" not in {k.removeprefix("module.") for k in state}:
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


_WORD_EMBEDDINGS = "text.transformer.embeddings.word_embeddings.weight"


def import_flair(weights: str | Path, out_dir: str | Path, model: str = "rn50-bioclinicalbert",
                 tokenizer: str | Path | None = None, **overrides):
    """Build ``model`` with FLAIR's text and image conventions, load the renamed weights strictly, save a release folder.

    ``tokenizer``: a local tokenizer folder (for machines without the network); when it also holds a
    Hugging Face ``config.json`` the text architecture is read from there too. The text embedding table
    gets as many rows as the checkpoint has (28,996 for Bio_ClinicalBERT), not as the tokenizer counts,
    so any tokenizer whose ids fit the table works.
    """
    from .factory import create_model, get_tokenizer

    settings = {"text.pooling": "flair_compat", "text.padding": "longest", "text.pretrained": False,
                "preprocess.mean": None, "preprocess.std": None, "preprocess.resize_mode": "pad"}
    if tokenizer is not None:
        folder = Path(tokenizer)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: tokenizer folder not found")
        settings["text.hf_tokenizer_name"] = str(folder)
        if (folder / "config.json").is_file():
            settings["text.hf_model_name"] = str(folder)
    settings.update(overrides)
    state = flair_to_fundus_vlp(_read_state_dict(Path(weights)))
    if _WORD_EMBEDDINGS not in state:
        raise CheckpointError(f"{weights}: no text word-embedding table "
                              "(text_model.model.embeddings.word_embeddings.weight)")
    rows = int(state[_WORD_EMBEDDINGS].shape[0])
    tok = get_tokenizer(model, **settings)
    if len(tok) > rows:
        raise CheckpointError(f"{weights}: the tokenizer has {len(tok)} tokens but the checkpoint's text embedding "
                              f"table only {rows} rows; use the tokenizer the weights were trained with")
    fundus = create_model(model, tokenizer=tok, vocab_size=rows, **settings)
    try:
        missing, unexpected = fundus.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches: a checkpoint of another architecture
        raise CheckpointError(f"{weights}: does not fit {model}: {str(exc).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights}: does not fit {model}: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    fundus.save_pretrained(out_dir, card={"method": "flair (imported)",
                                          "description": f"FLAIR weights imported from {Path(weights).name}."})
    return fundus
