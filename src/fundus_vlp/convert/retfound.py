"""RETFound (Zhou et al., Nature 2023): image-only ViT-L encoders, as MAE ViT-L/16 or DINOv2 ViT-L/14.

See docs/reference.md#retfound. The encoder becomes a timm ViT, so the model is an ordinary image-only
fundus-vlp model (no text tower): its embedding is the trunk's pooled feature, as RETFound's fine-tuning
and linear probing read it.

- MAE (``{'model': ...}``): ``vit_large_patch16_224`` with ``global_pool='avg'``: LayerNorm of the mean patch
  token (class token left out). A pre-trained file's ``norm`` and MAE decoder are not used and its pooling
  norm starts at weight 1, bias 0, exactly as RETFound's loader leaves them; a fine-tuned file brings its own
  ``fc_norm`` (its classifier ``head`` is left out: fundus-vlp models carry no task head).
- DINOv2 (``{'teacher': {'backbone.*'}}``): ``vit_large_patch14_dinov2`` at 224 px, class token after ``norm``.
  ``mask_token`` and the DINO/iBOT heads are training-only.

Preprocessing is RETFound's evaluation transform: shorter side to 256 (bicubic, on the 8-bit image), centre
crop 224, ImageNet mean/std (inputs above 224 px: no margin, crop_pct 1).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

import torch

from ..config import ModelCfg, PreprocessCfg, VisionCfg
from ..hub import CheckpointError
from .checkpoint import State, count_layers, load_strict, place, read_checkpoint, require, strip_prefix, unwrap
from .towers import HEAD_WIDTH, build, save_release

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CARD = {
    "paper": "Zhou et al., A foundation model for generalizable disease detection from retinal images, "
             "Nature 622, 156-163 (2023)",
    "license": "cc-by-nc-4.0 (RETFound weights; check the release you use)",
    "official_code": "github.com/rmaphoh/RETFound_MAE @ 897d71c8c9b1d0ca1984370d4c4352722017b80a",
}
_TIMM_NAME = {"mae": "vit_large_patch16_224", "dinov2": "vit_large_patch14_dinov2"}
_TIMM_DEFAULTS = {"embed_dim": 1024, "depth": 24, "num_heads": 16}
# MAE pre-training and DINO training parts, never part of the encoder
_TRAINING_ONLY = re.compile(r"^(mask_token|decoder_|dino_head\.|ibot_head\.|head\.|norm\.)")


def read_encoder(path: Path, variant: Optional[str]) -> tuple[State, str]:
    """(encoder state with RETFound's renames applied, variant)."""
    content = read_checkpoint(path)
    state, key = unwrap(content, path, ("teacher", "model", "state_dict"))
    variant = variant or ("dinov2" if key == "teacher" else "mae")
    if variant not in _TIMM_NAME:
        raise CheckpointError(f"retfound variant must be mae or dinov2, got {variant!r}")
    state = strip_prefix(strip_prefix(state, "module."), "backbone.")
    if variant == "dinov2":
        state = {_unchunk(k): v for k, v in state.items()}
    # RETFound's loader also renames SwiGLU MLPs (w12/w3) to fc1/fc2
    state = {k.replace("mlp.w12.", "mlp.fc1.").replace("mlp.w3.", "mlp.fc2."): v for k, v in state.items()}
    return state, variant


def _unchunk(key: str) -> str:
    """DINOv2 trained with block chunks names block 7 ``blocks.1.7``; timm names it ``blocks.7``."""
    return re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key)


def vision_cfg(state: State, variant: str, source: Path) -> VisionCfg:
    """timm's ViT of the checkpoint's shape: width, depth, patch and input size are read off the tensors."""
    width = int(require(state, "cls_token", source).shape[-1])
    patch = int(require(state, "patch_embed.proj.weight", source).shape[-1])
    positions = int(require(state, "pos_embed", source).shape[1]) - 1
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise CheckpointError(f"{source}: pos_embed has {positions + 1} positions, not a square grid + class token")
    arch = {"embed_dim": width, "depth": count_layers(state, "blocks."), "num_heads": max(1, width // HEAD_WIDTH)}
    kwargs = {k: v for k, v in arch.items() if v != _TIMM_DEFAULTS[k]}
    expected_patch = 16 if variant == "mae" else 14
    if patch != expected_patch:
        kwargs["patch_size"] = patch
    kwargs["img_size"] = grid * patch
    if variant == "mae":
        kwargs["global_pool"] = "avg"
    return VisionCfg(timm_model_name=_TIMM_NAME[variant], timm_kwargs=kwargs, projection="none")


def model_cfg(vision: VisionCfg, variant: str) -> ModelCfg:
    size = int(vision.timm_kwargs["img_size"])
    width = int(vision.timm_kwargs.get("embed_dim", _TIMM_DEFAULTS["embed_dim"]))
    preprocess = PreprocessCfg(size=size, resize_mode="crop", crop_pct=224 / 256 if size <= 224 else 1.0,
                               interpolation="bicubic", resize_backend="pil", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return ModelCfg(name=f"retfound-{variant}", embed_dim=width, vision=vision, text=None, preprocess=preprocess)


def import_retfound(weights: str | Path, out_dir: str | Path, tokenizer=None, variant: Optional[str] = None):
    """Import a RETFound MAE or DINOv2 checkpoint as an image-only fundus-vlp model folder."""
    if tokenizer is not None:
        raise CheckpointError("RETFound is an image-only model: it has no tokenizer (drop --tokenizer)")
    source = Path(weights)
    state, variant = read_encoder(source, variant)
    fine_tuned = variant == "mae" and "fc_norm.weight" in state
    rules = [(k, f"visual.trunk.{k}") for k in state if not _TRAINING_ONLY.match(k)]
    if fine_tuned:
        rules = [(k, f"visual.trunk.{k}") for k in state if not k.startswith("head.")]
    elif variant == "dinov2":
        rules += [("norm.weight", "visual.trunk.norm.weight"), ("norm.bias", "visual.trunk.norm.bias")]
    placement = place(state, source, rules, dropped=lambda k: bool(_TRAINING_ONLY.match(k)))
    cfg = model_cfg(vision_cfg(state, variant, source), variant)
    model = build(cfg, tokenizer=None)
    if variant == "mae" and not fine_tuned:  # RETFound's loader leaves the pooling norm at its initial value
        width = cfg.embed_dim
        placement.put("visual.trunk.fc_norm.weight", torch.ones(width), "(initial value, as RETFound's loader)")
        placement.put("visual.trunk.fc_norm.bias", torch.zeros(width), "(initial value, as RETFound's loader)")
    load_strict(model, placement)
    name = "MAE ViT-L/16" if variant == "mae" else "DINOv2 ViT-L/14"
    card = {**CARD, "title": f"RETFound {name} (imported)", "source": "RETFound release (Hugging Face YukunZhou/"
            f"RETFound_{'mae' if variant == 'mae' else 'dinov2'}_*)", "weights_file": source.name,
            "description": f"RETFound {name} encoder imported from {source.name}: an image-only model "
                           "(embeddings, linear probes, fine-tuning; no zero-shot)."}
    save_release(model, out_dir, placement, card)
    return model


