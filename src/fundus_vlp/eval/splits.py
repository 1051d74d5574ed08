"""Stratified, seeded, disjoint train/val/test splits (docs/reference.md#evaluation-splits, done leak-free).

Per class (stratum), the samples (or patients, when groups are given) are shuffled with the fold's seed;
the **test** set is drawn first, so it is the same for every shot count of a seed and the few-shot curve
compares like with like; then validation, then train. "Folds" are repeated seeded splits (Monte-Carlo
cross-validation, as in the official code), **not** disjoint k-fold: test sets of different seeds overlap.

With groups (a patient column), a whole patient goes to exactly one split; stratification then uses each
patient's most frequent label, and a k-shot split takes one image from each of k patients (the patient's
other images are left out, so the k shots are k independent eyes/patients).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

Shots = Union[int, float, None]


class SplitError(ValueError):
    """A class with too few samples for the requested split; the message names the class."""


@dataclass(frozen=True)
class Split:
    """Row indices into the experiment's dataframe (sorted, disjoint)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int

    def sizes(self) -> Dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _count(shots: Shots, n_class: int, what: str) -> Optional[int]:
    """Samples of one class for an int k (k per class), a fraction in (0, 1], or None (= the rest)."""
    if shots is None:
        return None
    if isinstance(shots, (bool, np.bool_)):
        raise TypeError(f"{what}: expected an int or a fraction, got {shots!r}")
    if isinstance(shots, (int, np.integer)):
        if shots < 0:
            raise ValueError(f"{what} must be >= 0, got {shots}")
        return int(shots)
    shots = float(shots)
    if not 0.0 <= shots <= 1.0:
        raise ValueError(f"{what} as a fraction must be in [0, 1], got {shots}")
    # floor, as the official code, but at least one sample when the fraction is positive
    return max(1, int(shots * n_class)) if shots > 0 else 0


def _group_strata(labels: np.ndarray, groups: np.ndarray):
    """Unique groups in first-appearance order, their stratum (majority label, ties -> smallest) and members."""
    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)
    members = [np.flatnonzero(inverse == g) for g in order]
    strata = np.array([np.bincount(labels[m]).argmax() for m in members])
    return members, strata


def make_splits(labels: Sequence[int], seed: int, shots_train: Shots, shots_val: Shots = 0,
                test_fraction: float = 0.2, groups: Optional[Sequence] = None,
                class_names: Optional[Sequence[str]] = None) -> Split:
    """One stratified split of ``labels`` for a fold ``seed``.

    Args:
        shots_train / shots_val: ``k`` (int, per class), a fraction of the class (floored, at least one
            sample when positive), or None for "all the rest".
        test_fraction: fraction of each class drawn first as test;
            0 when an experiment has an official test set.
        groups: optional patient ids; a patient never spans two splits.
    """
    labels = np.asarray(labels, dtype=int)
    groups_arr = np.arange(len(labels)) if groups is None else np.asarray(groups)
    if len(groups_arr) != len(labels):
        raise ValueError(f"groups has {len(groups_arr)} entries for {len(labels)} labels")
    if shots_train is None and shots_val is None:
        raise ValueError("shots_train and shots_val cannot both be None (the rest)")
    members, strata = _group_strata(labels, groups_arr)
    rng = np.random.default_rng(seed)
    out: Dict[str, List[int]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        cls_groups = [members[g] for g in np.flatnonzero(strata == c)]
        cls_groups = [cls_groups[i] for i in rng.permutation(len(cls_groups))]
        n_c = int(sum(len(m) for m in cls_groups))
        if n_c == 0:
            raise SplitError(f"class {name!r} is not the majority label of any patient, so patient-level "
                             f"stratification cannot give it its own samples; check the group pattern")
        n_test = _count(float(test_fraction), n_c, "test_fraction")
        pos, chosen = _take(cls_groups, 0, n_test, "test", name, n_c)
        out["test"] += chosen
        for part, shots in (("val", shots_val), ("train", shots_train)):
            want = _count(shots, n_c, f"shots_{part}")
            k_shot = isinstance(shots, (int, np.integer)) and not isinstance(shots, bool)
            if k_shot:
                pos, chosen = _take_one_per_group(cls_groups, pos, want, labels, c, part, name, n_c)
            else:
                pos, chosen = _take(cls_groups, pos, want, part, name, n_c)
            out[part] += chosen
    return Split(*(np.array(sorted(out[k]), dtype=int) for k in ("train", "val", "test")), seed=seed)


def _take(groups: List[np.ndarray], pos: int, want: Optional[int], part: str, name: str, n_c: int):
    """Whole groups from ``pos`` until ``want`` samples (None: all remaining groups)."""
    chosen: List[int] = []
    if want is None:
        for m in groups[pos:]:
            chosen += m.tolist()
        if not chosen:
            raise SplitError(f"class {name!r} ({n_c} samples) has no samples left for the {part} split")
        return len(groups), chosen
    while len(chosen) < want:
        if pos >= len(groups):
            raise SplitError(f"class {name!r} has {n_c} samples: too few for {want} {part} samples "
                             f"after the earlier splits; lower the shots/fractions or drop the class")
        chosen += groups[pos].tolist()
        pos += 1
    return pos, chosen


def _take_one_per_group(groups: List[np.ndarray], pos: int, k: int, labels: np.ndarray, c: int, part: str,
                        name: str, n_c: int):
    """k-shot: one sample of class ``c`` from each of the next k groups."""
    if pos + k > len(groups):
        raise SplitError(f"class {name!r} has {n_c} samples ({len(groups)} patients/images): too few for "
                         f"{k} {part} shots after the earlier splits")
    chosen = []
    for m in groups[pos:pos + k]:
        own = m[labels[m] == c]
        chosen.append(int(own[0]))
    return pos + k, chosen


def fold_seeds(folds: int, seed: int = 0, seeds: Optional[Sequence[int]] = None) -> List[int]:
    """The seed of each fold: explicit ``seeds`` or ``seed + f`` for f in range(folds)."""
    if seeds:
        return [int(s) for s in seeds]
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    return [seed + f for f in range(folds)]
