"""Stage-0 batches: the paragraph order is the shuffling DataLoader's order stage 0 always had, a function of
(seed, epoch) alone, so a resumed run starts mid-epoch on the same batches."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from fundus_vlp.data.text_corpus import ParagraphBatches, paragraph_order, require_corpus


def test_order_replays_a_seeded_shuffling_dataloader_epoch_after_epoch():
    n, batch = 23, 4
    loader = DataLoader(list(range(n)), batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(7))
    for epoch in range(3):
        expected = [i for b in loader for i in b.tolist()]
        sampler = ParagraphBatches(n, batch, seed=7)
        sampler.set_epoch(epoch)
        got = [i for b in sampler for i in b]
        assert got == expected, epoch


def test_resume_mid_epoch_yields_the_remaining_batches_and_ranks_split_a_round():
    full = ParagraphBatches(40, 4, seed=3)
    full.set_epoch(2)
    batches = list(full)
    later = ParagraphBatches(40, 4, seed=3)
    later.set_epoch(2, start_batch=6)
    assert list(later) == batches[6:] and len(full) == 10
    ranks = [paragraph_order(40, 3, 1, r, 2).tolist() for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == list(range(40)) and len(ParagraphBatches(40, 4, 3, 0, 2)) == 5


def test_a_run_without_text_is_refused_with_the_missing_path_named(tmp_path):
    with pytest.raises(ValueError, match="needs a corpus"):
        require_corpus([], [], demo=False)
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        require_corpus([str(tmp_path / "nowhere.txt")], [], demo=False)
