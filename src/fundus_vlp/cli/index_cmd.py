"""``fundus-vlp index --model DIR --elite CSV --image-root R``: the elite index a model folder shows examples from."""
from __future__ import annotations

import argparse

HELP = """Embed the images of image–caption files with a saved model and store them in the model folder as
an elite index (elite_index.safetensors: unit-norm embeddings + thumbnails; elite_index.json: the image
paths, captions, source rows and the hash of the weights). `fundus-vlp serve` then shows, for each
uploaded image, the most similar elite images with their captions.

  fundus-vlp index --model release/my-model --elite data/elite_captions.csv --image-root /data/FUNDUS
  fundus-vlp index --model release/my-model --elite a.csv --elite b.csv --image-root /data --thumbnail-size 0

Caption files: (image, caption), MM-Retinal's (Image_ID, en_caption) or the KeepFIT-FFA form. The index
belongs to the weights it was built with; after re-exporting the model, build it again.
"""


def register(sub) -> None:
    from ..app.elite_index import DEFAULT_THUMBNAIL_SIZE

    p = sub.add_parser("index", help="build the elite index of a model folder (nearest examples in serve)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved model folder; the index is written into it")
    p.add_argument("--elite", action="append", required=True, metavar="CSV", help="image–caption file (repeatable)")
    p.add_argument("--image-root", required=True, help="folder the image paths of the caption files are relative to")
    p.add_argument("--thumbnail-size", type=int, default=DEFAULT_THUMBNAIL_SIZE,
                   help=f"side of the stored thumbnails in pixels; 0 stores none and serve reads the originals "
                        f"(default {DEFAULT_THUMBNAIL_SIZE})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..app.elite_index import build_elite_index, save_elite_index
    from ..inference.loading import load_model
    from ..runtime.device import resolve_device

    if args.thumbnail_size < 0:
        raise ValueError(f"--thumbnail-size {args.thumbnail_size}: expected 0 (none) or a size in pixels")
    device = str(resolve_device(args.device))
    model = load_model(args.model, device=device).model
    index = build_elite_index(model, args.model, args.elite, args.image_root, args.thumbnail_size,
                              args.batch_size, device)
    weights, meta = save_elite_index(index, args.model)
    print(f"indexed {len(index)} elite images -> {weights} + {meta.name}")
    return 0
