"""Eye- and patient-level predictions from image-level logits.

A patient table has one row per image: ``patient, eye, image`` with ``eye`` ``OD`` (right) or ``OS``
(left); an eye may have several images. Aggregation:

* **eye**: the mean of the image logits of that eye, then softmax (single-label) or sigmoid (multi-label,
  after the calibration temperature when there is one). Averaging logits rather than probabilities
  weighs each photograph's evidence equally in log-odds.
* **patient**, rule ``max`` (default): a disease label takes the highest eye probability (a patient has
  glaucoma when either eye does); a *healthy* label (``normal`` by default) takes the lowest (a patient
  is normal only when both eyes are). Rule ``mean``: every label takes the mean over the eyes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, Tuple

import numpy as np
import pandas as pd

from ..data.dataframes import DataFormatError

EYES = ("OD", "OS")
PATIENT_COLUMNS = ("patient", "eye", "image")
PATIENT_RULES = ("max", "mean")
DEFAULT_HEALTHY_LABELS = ("normal",)


def read_patient_csv(path: str | Path) -> pd.DataFrame:
    """``patient, eye, image`` rows; image paths are relative to the CSV's folder unless absolute."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: patient table not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in PATIENT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; a patient table has columns "
                              f"{', '.join(PATIENT_COLUMNS)}; found {list(frame.columns)}")
    rows = []
    for i, rec in enumerate(frame.to_dict("records"), start=1):
        patient, eye, image = rec["patient"].strip(), rec["eye"].strip().upper(), rec["image"].strip()
        if not patient or not image:
            raise DataFormatError(f"{path}, row {i}: empty patient or image")
        if eye not in EYES:
            raise DataFormatError(f"{path}, row {i}: eye must be OD (right) or OS (left), got {rec['eye']!r}")
        resolved = Path(image) if Path(image).is_absolute() else path.parent / image
        rows.append({"patient": patient, "eye": eye, "image": str(resolved), "row": i})
    if not rows:
        raise DataFormatError(f"{path}: no rows")
    return pd.DataFrame(rows)


def eye_logits(image_logits: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Mean logits per (patient, eye), with ``n_images``; rows of ``table`` whose image has no logits are left out."""
    known = table[table["image"].isin(image_logits.index)]
    if known.empty:
        raise ValueError("no image of the patient table was predicted")
    values = image_logits.loc[known["image"]].to_numpy()
    frame = pd.DataFrame(values, columns=image_logits.columns)
    frame["patient"], frame["eye"] = known["patient"].to_numpy(), known["eye"].to_numpy()
    grouped = frame.groupby(["patient", "eye"], sort=True)
    out = grouped[list(image_logits.columns)].mean()
    out["n_images"] = grouped.size()
    return out


def aggregate(image_logits: pd.DataFrame, table: pd.DataFrame, to_probs: Callable[[np.ndarray], np.ndarray],
              rule: str = "max", healthy_labels: Sequence[str] = DEFAULT_HEALTHY_LABELS
              ) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """(eye probabilities indexed by (patient, eye), patient probabilities indexed by patient)."""
    if rule not in PATIENT_RULES:
        raise ValueError(f"patient rule must be one of {PATIENT_RULES}, got {rule!r}")
    labels = list(image_logits.columns)
    eyes_logits = eye_logits(image_logits, table)
    eyes = pd.DataFrame(to_probs(eyes_logits[labels].to_numpy()), index=eyes_logits.index, columns=labels)
    eyes["n_images"] = eyes_logits["n_images"]
    healthy = {h.strip().lower() for h in healthy_labels}
    by_patient = eyes.groupby(level="patient", sort=True)
    columns = {}
    for label in labels:
        if rule == "mean":
            columns[label] = by_patient[label].mean()
        elif label.lower() in healthy:
            columns[label] = by_patient[label].min()
        else:
            columns[label] = by_patient[label].max()
    patients = pd.DataFrame(columns)
    patients["n_eyes"] = by_patient.size()
    patients["n_images"] = by_patient["n_images"].sum()
    return eyes, patients
