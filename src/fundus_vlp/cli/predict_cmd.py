"""``fundus-vlp predict``: zero-shot probabilities per image, eye and patient, as a table, CSV or JSON."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

from ..constants import DEFAULT_MAX_IMAGE_PIXELS
from ..inference.calibration import MULTILABEL_METHODS

HELP = """Zero-shot classification of image files with prompt-ensemble prototypes (each label's knowledge-base
display name + its descriptions), through the same inference path as model.classify and evaluation
(fundus_vlp.predict in Python). Research use only; not a medical device.

  fundus-vlp predict --model DIR --classes "normal,glaucoma,cataract" a.png b.jpg images/
  fundus-vlp predict --model DIR --classes "normal,glaucoma" images/ --out predictions.csv

Folders are searched recursively for png, jpg, tif, bmp, ppm and webp files; entries that look like images
but are skipped (symbolic-link loops, broken links, folders named like images) are named on stderr.

Multi-label (--multilabel): each label gets its own probability from a positive/negative prompt pair
("A fundus photograph of glaucoma" vs "A fundus photograph with no glaucoma"). Probabilities are
uncalibrated unless --calibrate-on FILE gives a labelled validation table: multi-label then fits per-label
Platt scaling (scale + bias; --calibration-method isotonic for a monotone step map) and a per-label
threshold; single-label fits one softmax temperature. A label without at least 2 positive and 2 negative
images is left uncalibrated and said so. ECE and Brier before/after are measured by cross-fitting (each
image calibrated by a fit that did not see it) next to a constant baseline. --save-calibration FILE.json
keeps the fit (plain JSON) for --calibration FILE.json, fundus_vlp.predict(calibration=...) and the web app;
--reliability-diagram FILE.png draws it. The table is a CSV with an `image` column and one 0/1 column per
label, or the categorical dataframe format `image, atributes, categories`; paths are relative to
--calibration-root (default: its folder).

Patients (--patient-csv FILE with columns patient, eye (OD/OS), image; paths relative to the CSV's
folder): an eye's probabilities come from the mean of its images' logits. Single-label: a patient is
healthy (--healthy-labels, default "normal") only if every eye is, else takes the most probable disease
answer among its eyes; the row shows the deciding eye's probabilities. Multi-label: per disease, the maximum
over the eyes; healthy = no disease. Each patient row gives n_eyes, n_images and a note (one eye only,
failed images, or no valid image with the reasons). IMAGE arguments are optional with --patient-csv.

Bad images (missing, corrupt, larger than --max-pixels) are reported per file and the others predicted;
the exit status is 1 when any image failed. --out FILE.csv writes the image table (failed images with
their error) and, with --patient-csv, FILE.eyes.csv and FILE.patients.csv; --out FILE.json writes one
document with images, failed, skipped, calibration, eyes and patients.
"""


def register(sub) -> None:
    p = sub.add_parser("predict", help="zero-shot class probabilities for image files", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders (png, jpg, tif, webp, ...)")
    p.add_argument("--model", required=True, help="saved model folder")
    p.add_argument("--classes", required=True, help='comma-separated class names, e.g. "normal,glaucoma"')
    p.add_argument("--template", action="append", default=None,
                   help='prompt template with [CLS] or {} (repeatable; default "A fundus photograph of [CLS]")')
    p.add_argument("--no-domain-knowledge", action="store_true", help="no knowledge-base descriptions in the prompts")
    p.add_argument("--knowledge", default="fundus_en", help="knowledge base name (default fundus_en)")
    p.add_argument("--multilabel", action="store_true", help="independent per-label probabilities")
    p.add_argument("--calibrate-on", default=None, metavar="FILE",
                   help="labelled validation CSV: fit a calibration (Platt per label, or a temperature)")
    p.add_argument("--calibration-method", default="platt", choices=MULTILABEL_METHODS,
                   help="multi-label calibration map (default platt)")
    p.add_argument("--calibration-root", default=None, metavar="DIR",
                   help="folder the calibration table's image paths are relative to (default: its folder)")
    p.add_argument("--calibration", default=None, metavar="FILE.json", help="apply a saved calibration")
    p.add_argument("--save-calibration", default=None, metavar="FILE.json", help="write the fitted calibration")
    p.add_argument("--reliability-diagram", default=None, metavar="FILE.png",
                   help="reliability diagram of the fitted calibration (held-out probabilities)")
    p.add_argument("--patient-csv", default=None, metavar="FILE",
                   help="patient, eye (OD/OS), image table: adds eye- and patient-level predictions")
    p.add_argument("--healthy-labels", default="normal",
                   help='comma-separated labels that mean "no disease" (default normal)')
    p.add_argument("--out", default=None, metavar="FILE.csv|FILE.json", help="write the predictions to a file")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of a table")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help=f"refuse images with more pixels, e.g. decompression bombs (default {DEFAULT_MAX_IMAGE_PIXELS:,})")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.set_defaults(func=run)


def _parse_labels(text: str, multilabel: bool) -> List[str]:
    from ..inference.zero_shot import check_labels

    labels = [c.strip() for c in text.split(",") if c.strip()]
    if len(labels) < 2 and not multilabel:
        raise ValueError(f"--classes needs at least two comma-separated names, got {text!r} "
                         "(or --multilabel for independent labels)")
    return check_labels(labels, multilabel)


def _check_args(args) -> None:
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out {out}: use a .csv or .json file name")
    if args.calibrate_on and args.calibration:
        raise ValueError("give either --calibrate-on (fit a calibration) or --calibration (apply a saved one)")
    if (args.save_calibration or args.reliability_diagram) and not args.calibrate_on:
        raise ValueError("--save-calibration and --reliability-diagram need --calibrate-on FILE")
    if not args.images and not args.patient_csv:
        raise ValueError("no images: give IMAGE files/folders or --patient-csv")


def run(args: argparse.Namespace) -> int:
    from ..inference.calibration import reliability_diagram
    from ..inference.loading import load_model
    from ..inference.pipeline import calibrate, predict
    from ..inference.zero_shot import build_head

    labels = _parse_labels(args.classes, args.multilabel)
    _check_args(args)
    model = load_model(args.model, device=args.device).model
    device = next(model.parameters()).device
    knowledge = dict(knowledge=args.knowledge, descriptions=not args.no_domain_knowledge, templates=args.template)
    head = build_head(model, labels, args.knowledge, args.multilabel, args.template,
                      descriptions=not args.no_domain_knowledge, device=device)
    calibration, cal_failed = args.calibration, []
    if args.calibrate_on:
        calibration, cal_failed = calibrate(model, args.calibrate_on, labels, multilabel=args.multilabel,
                                            method=args.calibration_method, root=args.calibration_root,
                                            batch_size=args.batch_size, max_pixels=args.max_pixels, head=head,
                                            **knowledge)
    healthy = [h.strip() for h in args.healthy_labels.split(",") if h.strip()]
    result = predict(model, args.images or None, labels, multilabel=args.multilabel, calibration=calibration,
                     patients=args.patient_csv, healthy_labels=healthy, batch_size=args.batch_size,
                     skip_bad=True, max_pixels=args.max_pixels, head=head, **knowledge)
    failed = result.failed + cal_failed
    for name, reason in result.skipped:
        print(f"fundus-vlp predict: skipped {name}: {reason}", file=sys.stderr)
    for name, reason in failed:
        print(f"fundus-vlp predict: {name}: {reason}", file=sys.stderr)
    if result.calibration is None and args.multilabel:
        print("note: multi-label probabilities are uncalibrated (no --calibrate-on); decisions use 0.5",
              file=sys.stderr)
    if result.calibration is not None:
        print(result.calibration.summary(), file=sys.stderr)
    if args.save_calibration:
        print(f"wrote {result.calibration.save(args.save_calibration)}", file=sys.stderr)
    if args.reliability_diagram:
        print(f"wrote {reliability_diagram(result.calibration, args.reliability_diagram)}", file=sys.stderr)

    document = result.to_dict()
    document["failed"] = [{"image": n, "error": r} for n, r in failed]
    if args.out:
        _write(Path(args.out), document, result, failed)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(_table(result.probabilities.assign(prediction=result.answers)))
        if result.patients is not None:
            print("\neyes:\n" + _table(result.eyes) + "\n\npatients:\n" + _table(result.patients))
    if failed:
        print(f"fundus-vlp predict: {len(failed)} image(s) failed, {len(result.probabilities)} predicted",
              file=sys.stderr)
        return 1
    return 0


def _table(frame) -> str:
    return frame.to_string(float_format=lambda v: f"{v:.3f}")


def _write(out: Path, document: Dict, result, failed) -> None:
    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(document, indent=2))
        return
    table = result.probabilities.assign(prediction=result.answers, error="")
    bad = pd.DataFrame({"error": [r for _, r in failed]}, index=pd.Index([n for n, _ in failed], name="image"))
    pd.concat([table, bad]).to_csv(out)
    if result.eyes is not None:
        result.eyes.to_csv(out.with_suffix(".eyes.csv"))
        result.patients.to_csv(out.with_suffix(".patients.csv"))
