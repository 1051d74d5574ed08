"""``fundus-vlp import FORMAT``: released weights of a published retinal model -> a fundus-vlp model folder."""
from __future__ import annotations

import argparse

from ..convert.registry import FORMATS

HELP = """Convert the released weights of a published retinal foundation model into an ordinary fundus-vlp model
folder (config.json + model.safetensors + tokenizer + model card): `from_pretrained`, `predict`, `eval`
and `benchmark` use it like any other model. Checkpoints are read without unpickling objects;
every tensor must find its place (shapes checked), and the model's own preprocessing, tokenizer settings,
pooling and logit scale are written into its config. Nothing is downloaded.

Formats:
""" + "\n".join(f"  {f.name:<9} {f.summary}" + (f" [--variant {'|'.join(f.variants)}]" if f.variants else "")
                for f in FORMATS.values()) + """

  fundus-vlp import retfound --weights RETFound_mae_natureCFP.pth --out models/retfound
  fundus-vlp import vilref --weights vilref_vit-b-16.pt --tokenizer ViLReF/clip/vocab.txt --out models/vilref
  fundus-vlp import flair --weights flair_resnet.pth --tokenizer ./Bio_ClinicalBERT --out models/flair

--tokenizer: the WordPiece vocab.txt of the model (ViLReF and RET-CLIP ship it in their repositories), a folder
holding it, or a tokenizer folder. FLAIR/KeepFIT: optional when the Bio_ClinicalBERT tokenizer is in the local
Hugging Face cache. RETFound is image-only and has none.
"""


def register(sub) -> None:
    p = sub.add_parser("import", help="convert released weights (flair, keepfit, vilref, ret-clip, retfound)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("format", choices=sorted(FORMATS), metavar="FORMAT", help=", ".join(FORMATS))
    p.add_argument("--weights", required=True, help="the released checkpoint (.pth/.pt/.bin or .safetensors)")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--tokenizer", default=None, metavar="PATH", help="vocab.txt, or a tokenizer folder")
    p.add_argument("--variant", default=None, help="layout variant where a format has several (default: detected)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..convert.registry import import_weights

    model = import_weights(args.format, args.weights, args.out, tokenizer=args.tokenizer, variant=args.variant)
    kind = "image-only" if model.is_image_only else "image-text"
    print(f"imported {args.format} {args.weights} -> {args.out} ({kind}, {model.cfg.embed_dim}-d embeddings)")
    return 0
