"""``fundus-vlp predict --model DIR --classes "normal,glaucoma" IMAGES...``: zero-shot probabilities."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List


def register(sub) -> None:
    p = sub.add_parser("predict", help="zero-shot class probabilities for image files",
                       description="Zero-shot classification of image files with prompt-ensemble prototypes "
                                   "(class name + knowledge-base descriptions). Research use only; not a "
                                   "medical device.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (png, jpg, tif, ...)")
    p.add_argument("--model", required=True, help="saved model folder")
    p.add_argument("--classes", required=True, help='comma-separated class names, e.g. "normal,glaucoma"')
    p.add_argument("--template", action="append", default=None,
                   help='prompt template with [CLS] or {} (repeatable; default "A fundus photograph of [CLS]")')
    p.add_argument("--no-domain-knowledge", action="store_true", help="bare class names, no descriptions")
    p.add_argument("--knowledge", default="fundus_en", help="knowledge base name (default fundus_en)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.set_defaults(func=run)


def predict_files(model, images: List[Path], classes: List[str], templates=None, knowledge=None,
                  device: str = "cpu") -> List[Dict]:
    """[{image, probs: {class: p}, prediction}] for each file (evaluation transform, no augmentation)."""
    import torch

    from ..data.images import load_image
    from ..data.transforms import build_transform
    from ..models.zero_shot import DEFAULT_TEMPLATES, build_zero_shot_classifier, zero_shot_probs

    protos = build_zero_shot_classifier(model, classes, templates or DEFAULT_TEMPLATES, knowledge, device=device)
    transform = build_transform(model.cfg.preprocess, train=False)
    out = []
    with torch.no_grad():
        for path in images:
            x = transform(load_image(path))[None].to(device)
            p = zero_shot_probs(model.encode_image(x).float().cpu(), protos, model.scale())[0]
            out.append({"image": str(path), "probs": {c: float(v) for c, v in zip(classes, p)},
                        "prediction": classes[int(p.argmax())]})
    return out


def format_predictions(results: List[Dict], classes: List[str]) -> str:
    width = max([len("image")] + [len(r["image"]) for r in results])
    cols = [max(len(c), 6) for c in classes]
    lines = ["  ".join(["image".ljust(width)] + [c.rjust(w) for c, w in zip(classes, cols)] + ["prediction"])]
    for r in results:
        cells = [f"{r['probs'][c]:.3f}".rjust(w) for c, w in zip(classes, cols)]
        lines.append("  ".join([r["image"].ljust(width)] + cells + [r["prediction"]]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..runtime.device import resolve_device
    from ..eval.runner import load_model
    from ..models.zero_shot import load_knowledge

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if len(classes) < 2:
        raise ValueError(f"--classes needs at least two comma-separated names, got {args.classes!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"--classes has duplicates: {classes}")
    device = resolve_device(args.device)
    model, _, _ = load_model(args.model)
    model.to(device).eval()
    knowledge = None if args.no_domain_knowledge else load_knowledge(args.knowledge)
    results = predict_files(model, [Path(p) for p in args.images], classes, args.template, knowledge, device)
    print(json.dumps(results, indent=2) if args.json else format_predictions(results, classes))
    return 0
