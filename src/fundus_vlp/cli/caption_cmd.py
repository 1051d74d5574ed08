"""``fundus-vlp caption``: generate captions with a model that has a caption decoder (KeepFIT V2)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """Describe fundus images in words with the model's caption decoder (greedy or beam search).

  fundus-vlp caption --model runs/v2/model image1.png image2.jpg
  fundus-vlp caption --model runs/v2/model --beams 3 --max-length 48 --json captions.json images/*.png
"""


def register(sub) -> None:
    p = sub.add_parser("caption", help="generate captions for images (models trained with keepfit_v2)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved model folder with a caption decoder")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--beams", type=int, default=1, help="beam width (1 = greedy)")
    p.add_argument("--max-length", type=int, default=None, help="maximum caption length in tokens")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", default=None, help="also write {image: caption} to this file")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.images import load_image
    from ..factory import create_model_from_pretrained

    model, preprocess = create_model_from_pretrained(args.model)
    if model.decoder is None:
        raise ValueError(f"{args.model}: this model has no caption decoder (train it with method=keepfit_v2)")
    model.to(args.device).eval()
    results = {}
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start:start + args.batch_size]
        images = torch.stack([preprocess(load_image(p)) for p in paths]).to(args.device)
        ids = model.generate(images, max_length=args.max_length, num_beams=args.beams)
        for path, text in zip(paths, model.tokenizer.batch_decode(ids)):
            results[path] = text
            print(f"{path}: {text}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
