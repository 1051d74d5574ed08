"""Model factory: ``create_model``, ``create_model_and_transforms``, ``get_tokenizer`` (open_clip surface)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple, Union

from .config import ModelCfg, from_dict
from .config.registry import get_model_config
from .constants import CONFIG_NAME
from .hub import load_config, load_weights, resolve_model_dir
from .models.clip import FundusCLIP
from .models.tokenizer import Tokenizer

ModelSpec = Union[str, Path, ModelCfg]


def _is_pretrained_dir(spec: ModelSpec) -> bool:
    return not isinstance(spec, ModelCfg) and (resolve_model_dir(spec) / CONFIG_NAME).is_file()


def resolve_model_config(spec: ModelSpec, **overrides: Any) -> ModelCfg:
    if isinstance(spec, ModelCfg):
        if not overrides:
            return spec
        return from_dict(ModelCfg, spec, overrides)
    return get_model_config(str(spec), overrides)


def get_tokenizer(spec: ModelSpec, **overrides: Any) -> Tokenizer:
    """The tokenizer that belongs to a registered model, a config, or a saved model folder."""
    if _is_pretrained_dir(spec):
        cfg = load_config(spec)
        _require_text(cfg)
        return _folder_tokenizer(resolve_model_dir(spec), cfg)
    cfg = resolve_model_config(spec, **overrides)
    _require_text(cfg)
    name = cfg.text.hf_tokenizer_name or cfg.text.hf_model_name
    if name is None:
        raise ValueError(f"model {cfg.name!r} names no tokenizer (text.hf_tokenizer_name)")
    return Tokenizer.from_pretrained(name, cfg.text.context_length, cfg.text.padding, cfg.text.text_normalize)


def _require_text(cfg: ModelCfg) -> None:
    if cfg.text is None:
        from .models.errors import image_only_error

        raise image_only_error(f"a tokenizer (model {cfg.name!r})")


def create_model(spec: ModelSpec, tokenizer: Tokenizer | None = None, vocab_size: int | None = None,
                 **overrides: Any) -> FundusCLIP:
    """Build a model from a registered name (``list_models()``), a ``ModelCfg`` or a saved folder.

    Overrides use nested dicts or dotted keys: ``create_model("tiny", **{"text.pooling": "cls"})``.
    The returned model carries its tokenizer as ``model.tokenizer``. ``vocab_size``: rows of the text
    embedding table (default: the tokenizer's length; imported checkpoints fix it themselves).
    """
    if _is_pretrained_dir(spec):
        if overrides:
            raise ValueError("overrides are not applied to a saved model; edit its config.json or fine-tune instead")
        return from_pretrained(spec)
    cfg = resolve_model_config(spec, **overrides)
    if cfg.text is None and tokenizer is None:  # image-only (RETFound): no tokenizer, no text tower
        model = FundusCLIP(cfg)
        model.tokenizer = None
        return model
    tokenizer = tokenizer or get_tokenizer(cfg)
    model = FundusCLIP(cfg, pad_token_id=tokenizer.pad_token_id, vocab_size=vocab_size or len(tokenizer),
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model.tokenizer = tokenizer
    return model


def create_model_and_transforms(spec: ModelSpec, **overrides: Any) -> Tuple[FundusCLIP, Any, Any]:
    """``model, preprocess_train, preprocess_val`` as in open_clip; transforms come from ``model.cfg.preprocess``."""
    from .data.transforms import build_transform

    model = create_model(spec, **overrides)
    return model, build_transform(model.cfg.preprocess, train=True), build_transform(model.cfg.preprocess, train=False)


def create_model_from_pretrained(path: str | Path) -> Tuple[FundusCLIP, Any]:
    """``model, preprocess`` for a saved folder (open_clip's create_model_from_pretrained)."""
    from .data.transforms import build_transform

    model = from_pretrained(path)
    return model, build_transform(model.cfg.preprocess, train=False)


def from_pretrained(directory: str | Path) -> FundusCLIP:
    """A saved model folder (or a pretraining run folder: its ``model/``): read its config, build the
    architecture (``create_model``), load the weights."""
    directory = resolve_model_dir(directory)
    cfg = load_config(directory)
    tokenizer = None if cfg.text is None else _folder_tokenizer(Path(directory), cfg)
    model = create_model(cfg, tokenizer=tokenizer)
    load_weights(model, directory)
    model.eval()
    return model


def _folder_tokenizer(directory: Path, cfg: ModelCfg) -> Tokenizer:
    """The tokenizer saved in a model folder, with the model's context length and padding."""
    from .hub import CheckpointError, require_tokenizer_files

    require_tokenizer_files(directory)
    try:
        tokenizer = Tokenizer.from_pretrained(str(directory), cfg.text.context_length, cfg.text.padding,
                                              cfg.text.text_normalize)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}: tokenizer files unreadable ({exc})") from exc
    rows = (cfg.text.hf_config or {}).get("vocab_size")
    # more tokens than embedding rows would index past the table; far fewer means another (or a cut) vocabulary
    if rows and not rows // 2 <= len(tokenizer) <= rows:
        raise CheckpointError(f"{directory}: the tokenizer has {len(tokenizer)} tokens but the text tower was "
                              f"trained with a vocabulary of {rows}: the tokenizer files are incomplete or belong "
                              f"to another model; copy the ones the model was trained with")
    return tokenizer
