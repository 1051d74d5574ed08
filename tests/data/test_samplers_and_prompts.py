"""Paired batch sampler (sharding, balance, per-rank elite draws, mid-epoch start) and prompt building."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fundus_vlp.data.knowledge import KnowledgeBase
from fundus_vlp.data.prompts import fill_template, sample_prompt, zero_shot_prompts
from fundus_vlp.data.samplers import PairedBatchSampler, epoch_order


def test_ranks_get_disjoint_equal_shards_and_epochs_reshuffle():
    shards = [list(PairedBatchSampler(40, 4, rank=r, world_size=2, seed=1)) for r in range(2)]
    idx = [[k[1] for b in s for k in b] for s in shards]
    assert len(idx[0]) == len(idx[1]) == 20 and not set(idx[0]) & set(idx[1])
    s = PairedBatchSampler(40, 4, seed=1)
    first = [k[1] for b in s for k in b]
    s.set_epoch(1)
    assert first != [k[1] for b in s for k in b]


def test_elite_batches_differ_across_ranks_and_are_reproducible():
    a = [k for b in PairedBatchSampler(40, 4, 10, 3, rank=0, world_size=2, seed=0) for k in b if k[0] == "e"]
    b = [k for b in PairedBatchSampler(40, 4, 10, 3, rank=1, world_size=2, seed=0) for k in b if k[0] == "e"]
    again = [k for b in PairedBatchSampler(40, 4, 10, 3, rank=0, world_size=2, seed=0) for k in b if k[0] == "e"]
    assert len(a) == 5 * 3 and a == again
    assert [k[1] for k in a] != [k[1] for k in b]  # ranks must not draw the same elite batch


def test_mid_epoch_start_yields_the_remaining_batches_exactly():
    s = PairedBatchSampler(48, 4, 6, 2, seed=3)
    full = list(s)
    s.set_epoch(0, start_batch=7)
    assert list(s) == full[7:]


def test_balanced_order_gives_each_dataset_equal_mass():
    groups = [list(range(0, 90)), list(range(90, 99)), list(range(99, 100))]  # 90 / 9 / 1 images
    order = epoch_order(3000, seed=0, epoch=0, groups=groups)
    counts = Counter(0 if i < 90 else 1 if i < 99 else 2 for i in order)
    assert all(abs(c - 1000) <= 1 for c in counts.values())


def test_too_small_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one batch"):
        PairedBatchSampler(3, 4)


def test_prompt_sampling_and_description_augmentation():
    kb = KnowledgeBase.load()
    rng = np.random.default_rng(0)
    texts = {sample_prompt(["noisy"], ["glaucoma"], rng, knowledge=kb, augment=True)[0] for _ in range(60)}
    descriptions = kb.descriptions("glaucoma")
    assert "A noisy fundus photograph of glaucoma" in texts
    assert any(d in t for t in texts for d in descriptions)  # the category swapped for a description
    text, cat = sample_prompt([], [], rng)
    assert (text, cat) == ("A fundus photograph of", "")
    assert fill_template("A [ATR] fundus photograph of [CLS]", "cataract") == "A fundus photograph of cataract"
    appended = sample_prompt([], ["glaucoma"], rng, knowledge=kb, augment=True, mode="append")[0]
    assert appended.startswith("A fundus photograph of glaucoma, ")
    ensemble = zero_shot_prompts("glaucoma", descriptions)
    assert ensemble[0] == "A fundus photograph of glaucoma" and len(ensemble) == 1 + len(descriptions)
    assert kb.descriptions("glaucoma") == descriptions  # never mutated (FLAIR's helper mutates)
