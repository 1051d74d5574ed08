"""``predict(model, images, labels, calibration=..., patients=...) -> Prediction``: zero-shot answers per image,
eye and patient, the one path behind ``model.classify``, ``OnnxModel.classify``, ``fundus-vlp predict`` and
the web app.

Hops: inputs (``inputs.decode`` with the transform's decoding rule) -> embeddings (``embedding``) -> the
zero-shot head (``zero_shot.build_head``: display names, templates, descriptions, negatives) -> logits ->
probabilities (``zero_shot.to_probabilities``, or ``Calibration.apply``) -> answers -> eyes and patients
(``patients``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch

from .calibration import Calibration, fit_calibration, read_calibration_table, single_label_classes
from .embedding import embed_items, place
from .inputs import Batches, Progress, expand_inputs
from .patients import DEFAULT_HEALTHY_LABELS, PatientRule, aggregate, check_patient_table, read_patient_csv
from .zero_shot import Knowledge, ZeroShotHead, build_head, check_labels, to_probabilities


@dataclass
class Prediction:
    """Per image: ``logits``, ``probabilities`` (images × labels) and ``answers`` (the top label, or the labels
    at or above their thresholds joined by ";"); ``failed`` images and ``skipped`` folder entries with the
    reason; with a patient table, ``eyes`` and ``patients`` (see ``inference/patients.py`` for the rules)."""

    labels: List[str]
    multilabel: bool
    logits: pd.DataFrame
    probabilities: pd.DataFrame
    answers: pd.Series
    thresholds: Dict[str, float]
    failed: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    calibration: Optional[Calibration] = None
    eyes: Optional[pd.DataFrame] = None
    patients: Optional[pd.DataFrame] = None

    def to_dict(self) -> Dict:
        images = [{"image": name, "probs": {c: float(v) for c, v in row.items()}, "prediction": answer}
                  for (name, row), answer in zip(self.probabilities.iterrows(), self.answers)]
        doc = {"labels": self.labels, "multilabel": self.multilabel, "calibrated": self.calibration is not None,
               "calibration": self.calibration.to_dict() if self.calibration else None, "images": images,
               "failed": [{"image": n, "error": r} for n, r in self.failed],
               "skipped": [{"path": n, "reason": r} for n, r in self.skipped]}
        if self.patients is not None:
            doc["eyes"] = _records(self.eyes, ["patient", "eye"])
            doc["patients"] = _records(self.patients, ["patient"])
        return doc


def _records(frame: pd.DataFrame, index_names) -> List[Dict]:
    import json

    flat = frame.reset_index().rename(columns=dict(zip(frame.index.names, index_names)))
    return json.loads(flat.to_json(orient="records"))


def answers(probs: pd.DataFrame, labels: Sequence[str], multilabel: bool, thresholds: Dict[str, float]) -> List[str]:
    """The top label per row (single-label), or the labels at or above their thresholds (multi-label)."""
    if not multilabel:
        return [labels[int(i)] for i in probs[list(labels)].to_numpy().argmax(axis=1)] if len(probs) else []
    return [";".join(c for c in labels if row[c] >= thresholds[c]) for _, row in probs.iterrows()]


def image_logits(model, items, head: ZeroShotHead, batch_size: int = 32, device=None, progress: Progress = None,
                 skip_bad: bool = False, max_pixels: Optional[int] = None) -> Tuple[pd.DataFrame, List]:
    """(N×K logits indexed by image name, [(name, reason)] of the images that failed)."""
    record = Batches()
    if not items:
        return pd.DataFrame(columns=head.labels, dtype=float), []
    feats = embed_items(model, items, batch_size=batch_size, device=device, progress=progress, skip_bad=skip_bad,
                         record=record, max_pixels=max_pixels)
    logits = head.logits(feats) if len(feats) else torch.empty(0, len(head.labels))
    frame = pd.DataFrame(logits.numpy(), index=pd.Index(record.names, name="image"), columns=head.labels)
    return frame, record.failed


def probabilities(logits: pd.DataFrame, multilabel: bool, calibration: Optional[Calibration] = None) -> pd.DataFrame:
    """Zero-shot probabilities of a logits table: ``to_probabilities``, or the calibration's map."""
    values = logits.to_numpy()
    if calibration is not None:
        probs = calibration.apply(values)
    else:
        probs = to_probabilities(torch.tensor(values), multilabel).numpy()
    return pd.DataFrame(probs.astype(np.float64), index=logits.index, columns=logits.columns)


def _patient_table(patients) -> pd.DataFrame:
    if isinstance(patients, pd.DataFrame):
        return check_patient_table(patients)
    return read_patient_csv(patients)


def _with_table_images(items, table: Optional[pd.DataFrame]):
    if table is None:
        return items
    seen = {str(Path(name).resolve()) for name, item in items if isinstance(item, (str, Path))}
    extra = [img for img in dict.fromkeys(table["image"]) if str(Path(img).resolve()) not in seen]
    return items + [(img, Path(img)) for img in extra]


def _load_calibration(calibration) -> Optional[Calibration]:
    if calibration is None or isinstance(calibration, Calibration):
        return calibration
    return Calibration.load(calibration)


def predict(model, images=None, labels: Union[str, Sequence[str]] = (), *, multilabel: bool = False,
            knowledge: Knowledge = True, descriptions: bool = True, templates: Optional[Sequence[str]] = None,
            calibration: Union[None, Calibration, str, Path] = None, patients=None,
            healthy_labels: Sequence[str] = DEFAULT_HEALTHY_LABELS, batch_size: int = 32, device=None,
            progress: Progress = None, skip_bad: bool = False, max_pixels: Optional[int] = None,
            head: Optional[ZeroShotHead] = None) -> Prediction:
    """Zero-shot answers for ``images`` (paths, folders, PIL images, arrays, tensors) over ``labels``.

    ``knowledge``: True = the shipped English knowledge base, False = bare label names, or a knowledge-base
    name/object; its display names name the labels in the prompts, and its descriptions join the prompt
    ensembles unless ``descriptions=False``. ``calibration``: a ``Calibration`` or its JSON file (fitted with
    ``calibrate``); without one, multi-label decisions use 0.5. ``patients``: a ``patient, eye, image`` table
    (CSV path or DataFrame); its images are predicted too. ``skip_bad``: unreadable images are listed in
    ``failed`` instead of raising. ``head``: a head built before (e.g. by ``calibrate``) to reuse.
    """
    labels = check_labels(labels, multilabel)
    calibration = _load_calibration(calibration)
    if calibration is not None:
        calibration.check_labels(labels, multilabel)
    table = _patient_table(patients) if patients is not None else None
    skipped: List[Tuple[str, str]] = []
    items = expand_inputs(images, skipped) if images is not None else []
    items = _with_table_images(items, table)
    if not items:
        raise ValueError("no images given (an empty list, a folder without image files, or no patient table)")
    dev = place(model, device)
    head = head or build_head(model, labels, knowledge, multilabel, templates, descriptions=descriptions, device=dev)
    logits, failed = image_logits(model, items, head, batch_size, dev, progress, skip_bad or table is not None,
                                  max_pixels)
    probs = probabilities(logits, multilabel, calibration)
    thresholds = dict(calibration.thresholds) if calibration and multilabel else {c: 0.5 for c in labels}
    out = Prediction(labels, multilabel, logits, probs,
                     pd.Series(answers(probs, labels, multilabel, thresholds), index=probs.index, dtype=object),
                     thresholds, failed, skipped, calibration)
    if table is not None:
        resolved = logits.set_axis([str(Path(n).resolve()) for n in logits.index], axis=0)
        table = table.assign(image=[str(Path(i).resolve()) for i in table["image"]])
        reasons = [(str(Path(n).resolve()), r) for n, r in failed]
        rule = PatientRule(labels, multilabel, tuple(healthy_labels), thresholds)
        out.eyes, out.patients = aggregate(resolved, table, lambda z: probabilities(
            pd.DataFrame(z, columns=labels), multilabel, calibration).to_numpy(), rule, reasons)
    return out


def classify(model, images, labels, domain_knowledge: Knowledge = True, multilabel: bool = False,
             batch_size: int = 32, device=None, progress: Progress = None,
             templates: Optional[Sequence[str]] = None, calibration=None) -> pd.DataFrame:
    """Zero-shot probabilities as a DataFrame: one row per image (index = path or ``image_<i>``), one column per
    label; ``predict(...).probabilities``."""
    return predict(model, images, labels, multilabel=multilabel, knowledge=domain_knowledge, templates=templates,
                   calibration=calibration, batch_size=batch_size, device=device, progress=progress).probabilities


def calibrate(model, table: Union[str, Path], labels: Sequence[str], *, multilabel: bool = True,
              method: str = "platt", root: Union[None, str, Path] = None, knowledge: Knowledge = True,
              descriptions: bool = True, templates: Optional[Sequence[str]] = None, folds: int = 5, seed: int = 0,
              batch_size: int = 32, device=None, max_pixels: Optional[int] = None,
              head: Optional[ZeroShotHead] = None) -> Tuple[Calibration, List[Tuple[str, str]]]:
    """(fitted ``Calibration``, images that failed) from a labelled validation table (``read_calibration_table``:
    one 0/1 column per label, or the categorical dataframe format); its report is measured held-out."""
    labels = check_labels(labels, multilabel)
    images, targets = read_calibration_table(table, labels, root)
    dev = place(model, device)
    head = head or build_head(model, labels, knowledge, multilabel, templates, descriptions=descriptions, device=dev)
    items = [(str(i), Path(i)) for i in images]
    logits, failed = image_logits(model, items, head, batch_size, dev, skip_bad=True, max_pixels=max_pixels)
    keep = [k for k, img in enumerate(images) if str(img) in set(logits.index)]
    z = logits.loc[[str(images[k]) for k in keep]].to_numpy(dtype=np.float64)
    y = targets[keep]
    if not multilabel:
        y = single_label_classes(y, labels, str(table))
    failed = [(name, f"{reason} (calibration table {table})") for name, reason in failed]
    return fit_calibration(z, y, labels, multilabel, method, folds, seed), failed
