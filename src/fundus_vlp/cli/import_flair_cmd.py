"""``fundus-vlp import-flair``: the older spelling of ``fundus-vlp import flair`` (with an architecture option)."""
from __future__ import annotations

import argparse

HELP = """Convert released FLAIR (flair_resnet.pth or the HF model.safetensors) or KeepFIT v1 weights into a
fundus-vlp release folder, loaded with strict key checks and FLAIR's text pooling/padding so zero-shot
outputs match FLAIR's. The .pth is read with torch.load(weights_only=True).

  fundus-vlp import-flair --weights flair_resnet.pth --out models/flair
  fundus-vlp eval zero-shot --model models/flair --experiment 02_MESSIDOR ...

The text tower's architecture is read from the checkpoint itself; only the vocabulary is needed: the
Bio_ClinicalBERT tokenizer from the local Hugging Face cache, or --tokenizer DIR (a tokenizer folder, or
a folder / file with its vocab.txt):

  fundus-vlp import-flair --weights flair_resnet.pth --tokenizer ./Bio_ClinicalBERT --out models/flair

The text embedding table is sized from the checkpoint (28,996 rows for FLAIR), so any tokenizer whose
ids fit in it loads. Images are preprocessed as FLAIR does: [0, 1] inputs, longer side to 512 with the
official truncating size rule, zero padding bottom/right.
"""


def register(sub) -> None:
    p = sub.add_parser("import-flair", help="convert released FLAIR / KeepFIT v1 weights", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="FLAIR/KeepFIT state dict (.pth) or model.safetensors")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--model", default="rn50-bioclinicalbert", help="architecture (default rn50-bioclinicalbert)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="local tokenizer folder (and text config.json) instead of the hub")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..convert import import_flair

    import_flair(args.weights, args.out, args.model, tokenizer=args.tokenizer)
    print(f"imported {args.weights} -> {args.out}")
    return 0
