"""Release folders: ``config.json`` + ``model.safetensors`` + tokenizer files + a generated model card.

A leaf: it reads and writes the files; building the model between ``load_config`` and ``load_weights``
is the factory's job (``fundus_vlp.factory.from_pretrained``).

Loading never unpickles anything and never needs the network: the text tower's full Hugging Face
config is stored inside ``config.json`` (``text.hf_config``) and the tokenizer files sit beside it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

from .config import ConfigError, ModelCfg, from_dict, to_dict
from .runtime.files import atomic_dir
from .constants import CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME
from .version import __version__

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A model folder or training checkpoint that cannot be read; the message names the file."""


def load_torch_file(path: str | Path) -> Any:
    """``torch.load`` of a ``.pt``/``.pth`` with ``weights_only=True``. A file that holds other Python objects is
    reported as not safe, and never retried in a way that would unpickle it (unpickling can run code)."""
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message suggests retrying with weights_only=False; keep only the line that says what was found
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        found = next((ln for ln in lines if "weights_only" not in ln and "torch.load" not in ln), "unsupported object")
        found = found.removeprefix("WeightsUnpickler error:").strip()[:160]
        raise CheckpointError(
            f"{path}: not a safe checkpoint: it holds Python objects besides tensors and plain containers "
            f"({found}); fundus-vlp only reads weights and will not unpickle it. Use a checkpoint written by "
            f"fundus-vlp or weights saved as safetensors") from None
    except Exception as exc:  # truncated zip, not a torch file at all, ...
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


# Files that hold a tokenizer's vocabulary (tokenizer_config.json alone names special tokens only: transformers
# then builds a tokenizer of those few tokens, and every word becomes [UNK])
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                         "tokenizer.model")


def require_tokenizer_files(directory: str | Path) -> None:
    """Raise ``CheckpointError`` when a model folder has no tokenizer vocabulary beside its weights."""
    directory = Path(directory)
    if not any((directory / name).is_file() for name in TOKENIZER_VOCAB_FILES):
        raise CheckpointError(
            f"{directory}: the tokenizer is missing (none of {', '.join(TOKENIZER_VOCAB_FILES)}); a model folder "
            f"needs the tokenizer files its text tower was trained with beside the weights. Copy them from the "
            f"folder the model came from (save_pretrained writes them)")


def require_safe_weights(folder: str | Path) -> None:
    """A Hugging Face folder whose weights are only pickled ``pytorch_model*.bin`` files: read each with
    ``weights_only=True`` first, so an unsafe one is refused with the same message as any checkpoint."""
    folder = Path(folder)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return  # transformers prefers safetensors when present
    for path in sorted(folder.glob("pytorch_model*.bin")):
        load_torch_file(path)


def _release_config(model) -> Dict[str, Any]:
    cfg = to_dict(model.cfg)
    if model.text is not None:
        # Store the text tower's complete architecture so loading needs neither the hub nor the original name.
        cfg["text"]["hf_config"] = model.text.transformer.config.to_dict()
        cfg["text"]["pretrained"] = False
    cfg["vision"]["pretrained"] = False
    cfg["decoder"]["init_from_text"] = False  # weights are in the file; do not re-copy on load
    return {"format_version": FORMAT_VERSION, "fundus_vlp_version": __version__, "model_cfg": cfg}


def save_pretrained(model, directory: str | Path, tokenizer=None, card: Optional[Dict[str, Any]] = None) -> Path:
    """Write the release folder atomically (temp dir + rename), so a crash or a full disk never leaves half a
    model (``DiskFullError`` names the folder, the bytes needed and the free space)."""
    from safetensors.torch import save_model

    directory = Path(directory)
    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    if tokenizer is None and model.text is not None:
        raise ValueError("save_pretrained needs the model's tokenizer (model.tokenizer or tokenizer=...)")
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with atomic_dir(directory, needed=weight_bytes) as tmp:
        config = _release_config(model)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        save_model(model, str(tmp / WEIGHTS_NAME))  # handles the decoder's tied embeddings
        if tokenizer is not None:  # image-only models have none
            tokenizer.save_pretrained(tmp)
        (tmp / MODEL_CARD_NAME).write_text(model_card(model.cfg, card or {}))
    return directory


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder, or a pretraining run folder whose exported model is ``<run>/model``."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file() and (path / "model" / CONFIG_NAME).is_file():
        return path / "model"
    return path


def load_config(directory: str | Path) -> ModelCfg:
    """The folder's architecture, validated (types, known keys, plausible sizes) before anything is built."""
    path = resolve_model_dir(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a model folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a fundus-vlp model config (not valid JSON: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
        raise CheckpointError(f"{path}: not a fundus-vlp model config (no model_cfg section)")
    version = data.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version!r} is not one this fundus-vlp reads "
                              f"(up to {FORMAT_VERSION})")
    try:
        return from_dict(ModelCfg, data["model_cfg"], where=f"{path} (model_cfg)")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc


def load_weights(model, directory: str | Path) -> None:
    """Load ``model.safetensors`` into an architecture built from the folder's config; every key must match."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    weights = resolve_model_dir(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{weights}: unreadable or truncated safetensors file ({exc})") from exc
    if missing or unexpected:
        raise CheckpointError(f"{weights}: keys do not match the config: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")


def model_card(cfg: ModelCfg, info: Dict[str, Any]) -> str:
    """A generated model card: front matter, architecture, preprocessing, provenance, use and limits.

    ``info`` keys: title, description, method, data, results, and for imported weights ``source`` (where the
    released file comes from), ``paper``, ``license``, ``official_code`` (repository @ commit the conversion
    was checked against) and ``weights_file``."""
    pre = cfg.preprocess
    norm = f"mean {pre.mean}, std {pre.std}" if pre.mean else "none (inputs in [0, 1])"
    resize = {"pad": "keep aspect, longer side to the size, zero-pad bottom/right",
              "squash": "stretched to a square", "crop": f"shorter side to size/{pre.crop_pct}, centre crop"}
    text = cfg.text
    text_line = ("none (image-only model: no zero-shot or text search)" if text is None else
                 f"`{text.hf_model_name or 'BERT from config'}` ({text.pooling} pooling, {text.context_length} tokens)")
    results = info.get("results")
    lines = [
        "---",
        "library_name: fundus-vlp",
        f"license: {info.get('license', 'apache-2.0')}",
        f"pipeline_tag: {'image-feature-extraction' if text is None else 'zero-shot-image-classification'}",
        "tags: [fundus, retina, ophthalmology, vision-language, clip]",
        "---",
        f"# {info.get('title', cfg.name)}",
        "",
        info.get("description", "A fundus vision-language model trained with fundus-vlp."),
        "",
        "## Architecture",
        f"- image tower: timm `{cfg.vision.timm_model_name}` {cfg.vision.timm_kwargs or ''}; text tower: {text_line}",
        f"- embedding: {cfg.embed_dim}-d, L2-normalised; caption decoder: {'yes' if cfg.decoder.enabled else 'no'}",
        "",
        "## Preprocessing",
        f"- {pre.resize_mode} to {pre.size}×{pre.size} ({resize[pre.resize_mode]}), {pre.interpolation} "
        f"({'Pillow' if pre.resize_backend == 'pil' else 'tensor'} resize), "
        f"field-of-view crop: {pre.fov_crop}, normalisation: {norm}",
    ]
    if info.get("source"):
        lines += ["", "## Source",
                  f"- released weights: {info['source']}" + (f" (file `{info['weights_file']}`)"
                                                             if info.get("weights_file") else ""),
                  f"- paper: {info.get('paper', 'not recorded')}",
                  f"- licence of the weights: {info.get('license', 'not recorded')}",
                  f"- conversion checked against the official code at {info.get('official_code', 'not recorded')}"]
    else:
        lines += ["", "## Training",
                  f"- method: {info.get('method', 'unknown')}; data: {info.get('data', 'not recorded')}"]
    if results:
        lines += ["", "## Evaluation", results]
    lines += [
        "",
        "## Usage",
        "```python",
        "import fundus_vlp",
        "model, preprocess = fundus_vlp.create_model_from_pretrained('PATH')",
        "```",
        "",
        "## Intended use and limitations",
        "Research on retinal image-text representation learning. Not a medical device; not for clinical decisions.",
    ]
    return "\n".join(lines) + "\n"
