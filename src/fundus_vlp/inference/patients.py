"""Eye- and patient-level answers from image-level logits, by rules that cannot contradict their inputs.

A patient table has one row per image: ``patient, eye, image`` with ``eye`` ``OD`` (right) or ``OS``
(left); an eye may have several images.

* **Eye**: the mean of the logits of the eye's valid images, then the probabilities (calibrated when a
  calibration is given). Averaging logits weighs each photograph's evidence equally in log-odds. The eye's
  answer is its top label (single-label) or its labels at or above their thresholds (multi-label).
* **Patient, single-label**: healthy only if every eye's answer is a healthy label (``normal`` by default);
  the patient then takes the healthy answer of its least confident eye. Otherwise the patient takes the
  disease answer of the eye that gives a disease with the highest probability. The patient's probability
  columns are those of that deciding eye (named in ``eye``), so the patient's label is always the top label
  of the probabilities shown beside it and always one of its eyes' answers.
* **Patient, multi-label**: per disease label, the maximum over the eyes (a patient has glaucoma when either
  eye does, so the patient is positive exactly when some eye is); a healthy label is derived from the
  diseases: probability 1 − the highest disease probability, positive exactly when no disease is.
  With only healthy labels, the minimum over the eyes.

Each patient row says on how many eyes and images it rests; a patient resting on one eye is noted, and a
patient without any valid image is listed with the reason instead of disappearing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from ..data.dataframes import DataFormatError

EYES = ("OD", "OS")
PATIENT_COLUMNS = ("patient", "eye", "image")
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
    return check_patient_table(frame, path.parent, str(path))


def check_patient_table(frame: pd.DataFrame, root: str | Path = ".", source: str = "patient table") -> pd.DataFrame:
    """The table with eyes upper-cased and image paths resolved against ``root``; errors name the row."""
    missing = [c for c in PATIENT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{source}: missing column(s) {missing}; a patient table has columns "
                              f"{', '.join(PATIENT_COLUMNS)}; found {list(frame.columns)}")
    rows = []
    for i, rec in enumerate(frame.to_dict("records"), start=1):
        patient, eye, image = str(rec["patient"]).strip(), str(rec["eye"]).strip().upper(), str(rec["image"]).strip()
        if not patient or not image:
            raise DataFormatError(f"{source}, row {i}: empty patient or image")
        if eye not in EYES:
            raise DataFormatError(f"{source}, row {i}: eye must be OD (right) or OS (left), got {rec['eye']!r}")
        resolved = Path(image) if Path(image).is_absolute() else Path(root) / image
        rows.append({"patient": patient, "eye": eye, "image": str(resolved), "row": i})
    if not rows:
        raise DataFormatError(f"{source}: no rows")
    return pd.DataFrame(rows)


def eye_logits(image_logits: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Mean logits per (patient, eye) over the eye's valid images, with ``n_images``."""
    known = table[table["image"].isin(image_logits.index)]
    labels = list(image_logits.columns)
    if known.empty:
        return pd.DataFrame(columns=labels + ["n_images"],
                            index=pd.MultiIndex.from_tuples([], names=["patient", "eye"]))
    frame = pd.DataFrame(image_logits.loc[known["image"]].to_numpy(), columns=labels)
    frame["patient"], frame["eye"] = known["patient"].to_numpy(), known["eye"].to_numpy()
    grouped = frame.groupby(["patient", "eye"], sort=True)
    out = grouped[labels].mean()
    out["n_images"] = grouped.size()
    return out


@dataclass
class PatientRule:
    """The labels, which of them mean "no disease", single- or multi-label, and multi-label thresholds."""

    labels: List[str]
    multilabel: bool
    healthy: Tuple[str, ...] = DEFAULT_HEALTHY_LABELS
    thresholds: Dict[str, float] = None

    def __post_init__(self) -> None:
        self.thresholds = self.thresholds or {c: 0.5 for c in self.labels}
        healthy = {h.strip().lower() for h in self.healthy}
        self.healthy_labels = [c for c in self.labels if c.lower() in healthy]
        self.diseases = [c for c in self.labels if c.lower() not in healthy]

    def eye_answer(self, probs: pd.Series) -> str:
        if not self.multilabel:
            return str(probs[self.labels].astype(float).idxmax())
        return ";".join(c for c in self.labels if probs[c] >= self.thresholds[c])

    def patient(self, eyes: pd.DataFrame) -> Dict:
        """One patient's row from its eyes' probability rows (indexed by eye)."""
        return self._multilabel(eyes) if self.multilabel else self._single_label(eyes)

    def _single_label(self, eyes: pd.DataFrame) -> Dict:
        probs = eyes[self.labels].astype(float)
        top = probs.idxmax(axis=1)
        confidence = probs.max(axis=1)
        diseased = [e for e in eyes.index if top[e] not in self.healthy_labels]
        if diseased:
            eye = max(diseased, key=lambda e: confidence[e])
        else:  # every eye is healthy: the least confident healthy eye speaks for the patient
            eye = min(eyes.index, key=lambda e: confidence[e])
        return {**probs.loc[eye].to_dict(), "prediction": str(top[eye]), "eye": str(eye)}

    def _multilabel(self, eyes: pd.DataFrame) -> Dict:
        probs = eyes[self.labels].astype(float)
        row = {c: float(probs[c].max()) for c in self.diseases}
        positive = [c for c in self.diseases if row[c] >= self.thresholds[c]]
        worst = max(row.values()) if self.diseases else None
        for c in self.healthy_labels:
            row[c] = 1.0 - worst if self.diseases else float(probs[c].min())
        if self.diseases:
            healthy_positive = [] if positive else list(self.healthy_labels)
        else:
            healthy_positive = [c for c in self.healthy_labels if row[c] >= self.thresholds[c]]
        chosen = set(positive) | set(healthy_positive)
        row = {c: row[c] for c in self.labels}
        return {**row, "prediction": ";".join(c for c in self.labels if c in chosen), "eye": "+".join(eyes.index)}


def aggregate(image_logits: pd.DataFrame, table: pd.DataFrame, to_probs: Callable[[np.ndarray], np.ndarray],
              rule: PatientRule, failed: Sequence[Tuple[str, str]] = ()) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """(eyes indexed by (patient, eye), patients indexed by patient). ``failed``: (image, reason) of the
    images that could not be read, used to say why a patient or an eye has no valid image."""
    labels = rule.labels
    logits = eye_logits(image_logits, table)
    eyes = pd.DataFrame(to_probs(logits[labels].to_numpy(dtype=np.float64)) if len(logits) else
                        np.zeros((0, len(labels))), index=logits.index, columns=labels)
    eyes["prediction"] = [rule.eye_answer(row) for _, row in eyes.iterrows()]
    eyes["n_images"] = logits["n_images"].astype(int)
    reasons = dict(failed)
    rows = []
    for patient, images in table.groupby("patient", sort=True):
        mine = eyes.xs(patient, level="patient") if patient in eyes.index.get_level_values("patient") else None
        if mine is None or mine.empty:
            why = "; ".join(f"{Path(i).name}: {reasons.get(i, 'not predicted')}" for i in images["image"])
            rows.append({"patient": patient, **{c: np.nan for c in labels}, "prediction": "", "eye": "",
                         "n_eyes": 0, "n_images": 0, "note": f"no valid image ({why})"})
            continue
        note = []
        if len(mine) == 1:
            note.append(f"rests on one eye ({mine.index[0]})")
        lost = [e for e in images["eye"].unique() if e not in mine.index]
        if lost:
            note.append(f"eye {', '.join(lost)} has no valid image")
        n_failed = int((~images["image"].isin(image_logits.index)).sum())
        if n_failed:
            note.append(f"{n_failed} of {len(images)} images failed")
        rows.append({"patient": patient, **rule.patient(mine), "n_eyes": len(mine),
                     "n_images": int(mine["n_images"].sum()), "note": "; ".join(note)})
    patients = pd.DataFrame(rows).set_index("patient")
    return eyes, patients
