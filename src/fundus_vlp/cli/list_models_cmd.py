"""``fundus-vlp list-models``."""
from __future__ import annotations

import argparse

from ..config.registry import get_model_config, list_models


def register(sub) -> None:
    p = sub.add_parser("list-models", help="print the registered architectures",
                       description="Print the registered model architectures (configs/models/*.json).")
    p.add_argument("--verbose", "-v", action="store_true", help="also print towers, width and input size")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in list_models():
        if args.verbose:
            cfg = get_model_config(name)
            text = "none (image-only)" if cfg.text is None else cfg.text.hf_model_name or "BERT from config"
            print(f"{name:26s} image={cfg.vision.timm_model_name:22s} text={text:34s} dim={cfg.embed_dim:4d} "
                  f"input={cfg.preprocess.size}px")
        else:
            print(name)
    return 0
