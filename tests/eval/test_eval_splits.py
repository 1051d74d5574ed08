"""Splits: disjoint, reproducible per seed, different across seeds, stratified, patient-level."""
from __future__ import annotations

import numpy as np
import pytest

from fundus_vlp.eval.experiments import LabeledImages
from fundus_vlp.eval.context import split_for_seed
from fundus_vlp.eval.splits import SplitError, fold_seeds, make_splits

LABELS = np.repeat([0, 1, 2], [30, 20, 10])


def _disjoint(s):
    parts = [set(s.train), set(s.val), set(s.test)]
    return all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])


@pytest.mark.parametrize("shots_train,shots_val", [(4, 4), (1, 1), (None, 0.2), (0.5, 0.25)])
def test_disjoint_and_reproducible(shots_train, shots_val):
    a = make_splits(LABELS, 3, shots_train, shots_val, 0.2)
    b = make_splits(LABELS, 3, shots_train, shots_val, 0.2)
    assert _disjoint(a)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    c = make_splits(LABELS, 4, shots_train, shots_val, 0.2)
    assert not np.array_equal(a.test, c.test)


def test_k_shot_counts_per_class():
    s = make_splits(LABELS, 0, 5, 3, 0.2)
    assert np.bincount(LABELS[s.train], minlength=3).tolist() == [5, 5, 5]
    assert np.bincount(LABELS[s.val], minlength=3).tolist() == [3, 3, 3]
    assert np.bincount(LABELS[s.test], minlength=3).tolist() == [6, 4, 2]  # floor(0.2 * n_c)


def test_fraction_and_rest():
    s = make_splits(LABELS, 0, None, 0.2, 0.2)
    assert np.bincount(LABELS[s.val], minlength=3).tolist() == [6, 4, 2]
    assert len(s.train) + len(s.val) + len(s.test) == len(LABELS)


def test_test_split_is_the_same_for_every_shot_count_of_a_seed():
    tests = [make_splits(LABELS, 7, k, k, 0.2).test for k in (1, 2, 4)]
    lp = make_splits(LABELS, 7, None, 0.2, 0.2).test
    for t in tests:
        np.testing.assert_array_equal(t, lp)


def test_too_few_samples_raise_naming_the_class():
    with pytest.raises(SplitError, match="class 'mild' has 10 samples"):
        make_splits(LABELS, 0, 4, 4, 0.2, class_names=["normal", "glaucoma", "mild"])  # mild: 2 + 4 + 4 = 10 ok
        make_splits(LABELS, 0, 5, 4, 0.2, class_names=["normal", "glaucoma", "mild"])


def test_groups_never_span_splits():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 2)  # two eyes per patient
    labels = np.repeat(rng.integers(0, 2, 40), 2)
    labels[::7] = 1 - labels[::7]  # some patients with different labels per eye
    for split in (make_splits(labels, 1, 3, 3, 0.25, groups), make_splits(labels, 1, None, 0.2, 0.25, groups)):
        seen = {}
        for part in ("train", "val", "test"):
            for g in groups[getattr(split, part)]:
                assert seen.setdefault(g, part) == part, f"patient {g} in {seen[g]} and {part}"
    k = make_splits(labels, 1, 3, 3, 0.25, groups)
    assert len(set(groups[k.train])) == len(k.train)  # k shots = k different patients
    assert np.bincount(labels[k.train], minlength=2).tolist() == [3, 3]


def test_official_test_set_is_used_as_test():
    labels = np.array([0, 1] * 15 + [0, 1] * 5)
    official = np.array([False] * 30 + [True] * 10)
    data = LabeledImages(paths=[None] * 40, labels=labels, groups=None, where=[""] * 40, official_test=official)
    s = split_for_seed(data, 0, 3, 3, 0.2, ["a", "b"])
    np.testing.assert_array_equal(s.test, np.arange(30, 40))
    assert set(s.train) | set(s.val) <= set(range(30)) and _disjoint(s)


def test_fold_seeds():
    assert fold_seeds(3, seed=10) == [10, 11, 12]
    assert fold_seeds(3, seeds=[5, 9]) == [5, 9]
    with pytest.raises(ValueError):
        fold_seeds(0)
