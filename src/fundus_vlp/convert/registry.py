"""The importable formats (``fundus-vlp import FORMAT``): one entry per released model family."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class ImportFormat:
    name: str
    summary: str
    importer: str  # "module:function" in this package, called (weights, out_dir, tokenizer, variant)
    variants: Tuple[str, ...] = ()  # empty: one layout; else the choices of --variant (None = detected)
    tokenizer: str = "none"  # "none", "optional" or "required": what --tokenizer means for this format


FORMATS: Dict[str, ImportFormat] = {f.name: f for f in (
    ImportFormat("flair", "FLAIR ResNet-50 + Bio_ClinicalBERT (flair_resnet.pth or the HF model.safetensors)",
                 "flair:import_flair_format", tokenizer="optional"),
    ImportFormat("keepfit", "KeepFIT v1 (FLAIR layout plus a training-only revision attention)",
                 "flair:import_keepfit_format", tokenizer="optional"),
    ImportFormat("vilref", "ViLReF ViT-B/16 or RN50 (Chinese-CLIP layout, Chinese RoBERTa text tower)",
                 "chinese_clip:import_vilref", tokenizer="required"),
    ImportFormat("ret-clip", "RET-CLIP ViT-B/16 (binocular Chinese-CLIP layout)", "chinese_clip:import_ret_clip",
                 variants=("patient", "left", "right"), tokenizer="required"),
    ImportFormat("retfound", "RETFound MAE ViT-L/16 or DINOv2 ViT-L/14 (image-only)", "retfound:import_retfound",
                 variants=("mae", "dinov2")),
)}


def import_weights(fmt: str, weights: str | Path, out_dir: str | Path, tokenizer: str | Path | None = None,
                   variant: Optional[str] = None):
    """Convert a released checkpoint of format ``fmt`` into a fundus-vlp release folder; returns the model."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown import format {fmt!r}; known: {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    if variant is not None and variant not in spec.variants:
        raise ValueError(f"{fmt} has no variant {variant!r}" + (f"; choose one of {', '.join(spec.variants)}"
                                                                 if spec.variants else " (it has one layout)"))
    if spec.tokenizer == "required" and tokenizer is None:
        raise ValueError(f"{fmt}: --tokenizer is required: the model's WordPiece vocab.txt (shipped in its official "
                         "repository) or a tokenizer folder; fundus-vlp never downloads one")
    module, function = spec.importer.split(":")
    run = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    return run(weights, out_dir, tokenizer=tokenizer, variant=variant)
