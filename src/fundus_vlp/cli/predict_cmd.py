"""``fundus-vlp predict``: zero-shot probabilities per image, eye and patient, as a table, CSV or JSON."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

from ..constants import DEFAULT_MAX_IMAGE_PIXELS

HELP = """Zero-shot classification of image files with prompt-ensemble prototypes (label name + knowledge-base
descriptions). Research use only; not a medical device.

  fundus-vlp predict --model DIR --classes "normal,glaucoma,cataract" a.png b.jpg images/
  fundus-vlp predict --model DIR --classes "normal,glaucoma" images/ --out predictions.csv

Multi-label (--multilabel): each label gets its own probability from a positive/negative prompt pair
("A fundus photograph of glaucoma" vs "A fundus photograph with no glaucoma"). These probabilities are
uncalibrated unless --calibrate-on FILE gives a labelled validation table; then one temperature and a
per-label threshold are fitted on it and the expected calibration error before/after is reported.
The table is a CSV with an `image` column and one 0/1 column per label, or the categorical dataframe
format `image, atributes, categories`; paths are relative to --calibration-root (default: its folder).

Patients (--patient-csv FILE with columns patient, eye (OD/OS), image; paths relative to the CSV's
folder): eye probabilities come from the mean of that eye's image logits; a patient takes, per disease
label, the maximum over the eyes, and for --healthy-labels (default "normal") the minimum
(--patient-rule mean: the mean over the eyes for every label). The images of the table are predicted
too, so IMAGE arguments are optional with --patient-csv.

Bad images (missing, corrupt, larger than --max-pixels) are reported per file and the others predicted;
the exit status is 1 when any image failed. --out FILE.csv writes the image table (failed images with
their error) and, with --patient-csv, FILE.eyes.csv and FILE.patients.csv; --out FILE.json writes one
document with images, failed, calibration, eyes and patients.
"""



def register(sub) -> None:
    p = sub.add_parser("predict", help="zero-shot class probabilities for image files", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders (png, jpg, tif, ...)")
    p.add_argument("--model", required=True, help="saved model folder")
    p.add_argument("--classes", required=True, help='comma-separated class names, e.g. "normal,glaucoma"')
    p.add_argument("--template", action="append", default=None,
                   help='prompt template with [CLS] or {} (repeatable; default "A fundus photograph of [CLS]")')
    p.add_argument("--no-domain-knowledge", action="store_true", help="bare class names, no descriptions")
    p.add_argument("--knowledge", default="fundus_en", help="knowledge base name (default fundus_en)")
    p.add_argument("--multilabel", action="store_true", help="independent per-label probabilities")
    p.add_argument("--calibrate-on", default=None, metavar="FILE",
                   help="labelled validation CSV for temperature scaling + per-label thresholds (--multilabel)")
    p.add_argument("--calibration-root", default=None, metavar="DIR",
                   help="folder the calibration table's image paths are relative to (default: its folder)")
    p.add_argument("--patient-csv", default=None, metavar="FILE",
                   help="patient, eye (OD/OS), image table: adds eye- and patient-level predictions")
    p.add_argument("--patient-rule", default="max", choices=("max", "mean"),
                   help="patient from eyes: max for diseases / min for healthy labels (default), or mean")
    p.add_argument("--healthy-labels", default="normal",
                   help='comma-separated labels that mean "no disease" (patient = min over eyes; default normal)')
    p.add_argument("--out", default=None, metavar="FILE.csv|FILE.json", help="write the predictions to a file")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of a table")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help=f"refuse images with more pixels, e.g. decompression bombs (default {DEFAULT_MAX_IMAGE_PIXELS:,})")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.set_defaults(func=run)


def _parse_labels(text: str, multilabel: bool) -> List[str]:
    from ..models.inference import check_labels

    labels = [c.strip() for c in text.split(",") if c.strip()]
    if len(labels) < 2 and not multilabel:
        raise ValueError(f"--classes needs at least two comma-separated names, got {text!r} "
                         "(or --multilabel for independent labels)")
    return check_labels(labels, multilabel)


def image_logits(model, items: List[str], heads, batch_size: int, max_pixels: int, device):
    """(logits DataFrame indexed by image path, [(path, reason)] of the images that failed)."""
    import pandas as pd

    from ..models.inference import Batches, embed_images, label_logits

    record = Batches()
    feats = embed_images(model, items, batch_size=batch_size, device=device, skip_bad=True, record=record,
                         max_pixels=max_pixels) if items else None
    labels = heads[2]
    if feats is None or not len(feats):
        return pd.DataFrame(columns=labels, dtype=float), record.failed
    logits = label_logits(feats, heads[0], heads[1], model.zero_shot_scale())
    return pd.DataFrame(logits.numpy().astype("float64"), index=record.names, columns=labels), record.failed


def _items(args, patients):
    from ..models.inference import expand_inputs

    items = [name for name, _ in expand_inputs(args.images)] if args.images else []
    if patients is not None:
        seen = {str(Path(name).resolve()) for name in items}
        items += [img for img in dict.fromkeys(patients["image"]) if str(Path(img).resolve()) not in seen]
    if not items:
        raise ValueError("no images: give IMAGE files/folders or --patient-csv")
    return items


def _calibrate(args, model, heads, device, failed):
    from ..eval.calibration import fit_calibration, read_calibration_table

    images, targets = read_calibration_table(args.calibrate_on, heads[2], args.calibration_root)
    logits, cal_failed = image_logits(model, [str(i) for i in images], heads, args.batch_size, args.max_pixels, device)
    failed += [(name, f"{reason} (calibration table {args.calibrate_on})") for name, reason in cal_failed]
    keep = [i for i, img in enumerate(images) if str(img) in set(logits.index)]
    return fit_calibration(logits.loc[[str(images[i]) for i in keep]].to_numpy(), targets[keep], heads[2])


def _predictions(probs, labels: List[str], multilabel: bool, thresholds: Dict[str, float]) -> List[str]:
    if not multilabel:
        return [labels[int(i)] for i in probs.to_numpy().argmax(axis=1)]
    return [";".join(c for c in labels if row[c] >= thresholds[c]) for _, row in probs.iterrows()]


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..eval.patients import aggregate, read_patient_csv
    from ..models.inference import logits_to_probs, zero_shot_heads
    from ..runtime.device import resolve_device
    from ..eval.runner import load_model
    from ..models.zero_shot import load_knowledge

    labels = _parse_labels(args.classes, args.multilabel)
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out {out}: use a .csv or .json file name")
    if args.calibrate_on and not args.multilabel:
        raise ValueError("--calibrate-on calibrates multi-label probabilities; add --multilabel")
    patients_table = read_patient_csv(args.patient_csv) if args.patient_csv else None
    items = _items(args, patients_table)
    device = resolve_device(args.device)
    model, _, _ = load_model(args.model)
    model.to(device).eval()
    knowledge = None if args.no_domain_knowledge else load_knowledge(args.knowledge)
    positive, negative = zero_shot_heads(model, labels, knowledge if knowledge is not None else False, args.multilabel, args.template, device)
    heads = (positive, negative, labels)

    logits, failed = image_logits(model, items, heads, args.batch_size, args.max_pixels, device)
    calibration = _calibrate(args, model, heads, device, failed) if args.calibrate_on else None
    for name, reason in failed:  # before anything that may stop on them
        print(f"fundus-vlp predict: {name}: {reason}", file=sys.stderr)
    temperature = calibration.temperature if calibration else 1.0
    thresholds = calibration.thresholds if calibration else {c: 0.5 for c in labels}

    def to_probs(values):
        import torch

        return logits_to_probs(torch.tensor(values, dtype=torch.float64), args.multilabel, temperature).numpy()

    probs = pd.DataFrame(to_probs(logits.to_numpy()), index=logits.index, columns=labels)
    probs.index.name = "image"
    prediction = _predictions(probs, labels, args.multilabel, thresholds)
    eyes = patients = None
    if patients_table is not None:
        resolved = logits.copy()
        resolved.index = [str(Path(n).resolve()) for n in logits.index]
        table = patients_table.assign(image=[str(Path(i).resolve()) for i in patients_table["image"]])
        healthy = [h.strip() for h in args.healthy_labels.split(",") if h.strip()]
        eyes, patients = aggregate(resolved, table, to_probs, args.patient_rule, healthy)
        patients["prediction"] = _predictions(patients[labels], labels, args.multilabel, thresholds)

    if args.multilabel and calibration is None:
        print("note: multi-label probabilities are uncalibrated (no --calibrate-on); decisions use 0.5",
              file=sys.stderr)
    if calibration is not None:
        print(f"calibration on {calibration.n_images} images of {args.calibrate_on}: temperature "
              f"{calibration.temperature:.3f}, ECE {calibration.ece_before:.4f} -> {calibration.ece_after:.4f} "
              "(measured on the calibration set); thresholds "
              + ", ".join(f"{c}={t:.3f}" for c, t in calibration.thresholds.items()), file=sys.stderr)

    document = _document(probs, prediction, failed, calibration, args, eyes, patients)
    if out is not None:
        _write(out, document, probs, prediction, failed, eyes, patients)
        print(f"wrote {out}", file=sys.stderr)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(_table(probs.assign(prediction=prediction)))
        if patients is not None:
            print("\neyes:\n" + _table(eyes) + "\n\npatients:\n" + _table(patients))
    if failed:
        print(f"fundus-vlp predict: {len(failed)} image(s) failed, {len(probs)} predicted", file=sys.stderr)
        return 1
    return 0


def _table(frame) -> str:
    return frame.to_string(float_format=lambda v: f"{v:.3f}")


def _records(frame, index_names) -> List[Dict]:
    return json.loads(frame.reset_index().rename(columns=dict(zip(frame.index.names, index_names)))
                      .to_json(orient="records"))


def _document(probs, prediction, failed, calibration, args, eyes, patients) -> Dict:
    images = [{"image": name, "probs": {c: float(v) for c, v in row.items()}, "prediction": pred}
              for (name, row), pred in zip(probs.iterrows(), prediction)]
    doc = {"labels": list(probs.columns), "multilabel": bool(args.multilabel),
           "calibrated": calibration is not None, "calibration": calibration.to_dict() if calibration else None,
           "images": images, "failed": [{"image": n, "error": r} for n, r in failed]}
    if eyes is not None:
        doc["patient_rule"] = args.patient_rule
        doc["eyes"] = _records(eyes, ["patient", "eye"])
        doc["patients"] = _records(patients, ["patient"])
    return doc


def _write(out: Path, document, probs, prediction, failed, eyes, patients) -> None:
    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(document, indent=2))
        return
    table = probs.assign(prediction=prediction, error="")
    bad = pd.DataFrame({"error": [r for _, r in failed]}, index=pd.Index([n for n, _ in failed], name="image"))
    pd.concat([table, bad]).to_csv(out)
    if eyes is not None:
        eyes.to_csv(out.with_suffix(".eyes.csv"))
        patients.to_csv(out.with_suffix(".patients.csv"))

