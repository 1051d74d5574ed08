"""``fundus-vlp serve --model DIR``: a local web page to try a model on your own fundus images."""
from __future__ import annotations

import argparse

HELP = """Serve a local web app (Gradio) for a saved model folder: upload fundus images, edit the label list,
and see zero-shot probabilities as a bar chart and a table, with and without knowledge-base descriptions;
a generated caption for models with a caption decoder (KeepFIT V2); the nearest elite examples when the
folder carries an elite index (`fundus-vlp index`).

  fundus-vlp serve --model runs/demo-x/keepfit_v2/model
  fundus-vlp serve --model release/my-model --port 8080 --labels "normal,glaucoma,cataract"

The page listens on 127.0.0.1 (this machine only) unless --host says otherwise; nothing is sent elsewhere.
Default labels: the `labels:` list of the model card's front matter, else six common findings of the
packaged knowledge base. Research use only; not a medical device.
"""


def register(sub) -> None:
    from ..app.uploads import DEFAULT_MAX_IMAGES, DEFAULT_MAX_UPLOAD_MB

    p = sub.add_parser("serve", help="local web app: upload images, see zero-shot probabilities and captions",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved model folder (config.json + model.safetensors)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes the page to your network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--labels", default=None, help='comma-separated default labels, e.g. "normal,glaucoma"')
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (default cpu)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest accepted image file in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--max-images", type=int, default=DEFAULT_MAX_IMAGES,
                   help=f"images analysed per request (default {DEFAULT_MAX_IMAGES})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..app.analysis import parse_labels
    from ..app.ui import launch

    if not (Path(args.model) / "config.json").is_file():
        raise FileNotFoundError(f"{args.model}: not a model folder (no config.json)")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}: expected 1..65535")
    if args.max_upload_mb <= 0 or args.max_images < 1:
        raise ValueError("--max-upload-mb and --max-images must be positive")
    labels = parse_labels(args.labels) if args.labels else None
    launch(args.model, host=args.host, port=args.port, labels=labels, device=args.device,
           max_upload_mb=args.max_upload_mb, max_images=args.max_images)
    return 0
