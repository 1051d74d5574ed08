"""A resumable, rank-aware batch sampler pairing every main batch with an elite batch.

Replaces the official pair of loaders (docs/reference.md#keepfit-v1-data-pipeline): a ``DistributedSampler``-like
sharding of the main stream (reshuffled per epoch, optionally dataset-balanced as FLAIR's ``UniformDataset``) and a
uniform with-replacement elite sampler seeded **per rank** (the official code most likely drew
the same elite batch on every GPU). It can start mid-epoch, so a resumed run skips what was done.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..runtime.seed import derive_seed, rng_for

Key = Tuple[str, int, int]


def epoch_order(n: int, seed: int, epoch: int, groups: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
    """The global draw order of one epoch (identical on all ranks).

    Without groups: a permutation of range(n). With groups (dataset-balanced, as FLAIR): draw i picks
    group i mod D and a uniform member of it (with replacement), then the draws are shuffled, so every
    source dataset contributes ~1/D of the epoch whatever its size.
    """
    rng = rng_for(seed, "order", epoch)
    if not groups:
        return rng.permutation(n)
    groups = [np.asarray(g) for g in groups if len(g)]
    draws = np.empty(n, dtype=np.int64)
    for i in range(n):
        g = groups[i % len(groups)]
        draws[i] = g[rng.integers(len(g))]
    return draws[rng.permutation(n)]


class PairedBatchSampler:
    """Yields lists of ``(stream, index, sample_seed)`` keys for ``TrainingDataset``.

    ``drop_last`` semantics: every rank gets the same number of full batches (gathers need equal sizes).
    """

    def __init__(self, n_main: int, batch_size: int, n_elite: int = 0, elite_batch_size: int = 0,
                 rank: int = 0, world_size: int = 1, seed: int = 0,
                 groups: Optional[Sequence[Sequence[int]]] = None):
        if batch_size <= 0:
            raise ValueError("batch size must be positive")
        self.n_main, self.batch_size = n_main, batch_size
        self.n_elite, self.elite_batch_size = n_elite, elite_batch_size if n_elite else 0
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.groups = groups
        self.epoch = 0
        self.start_batch = 0
        if len(self) == 0:
            raise ValueError(f"{n_main} samples are fewer than one batch of {batch_size} x {world_size} rank(s)")

    def __len__(self) -> int:
        return self.n_main // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[List[Key]]:
        order = epoch_order(self.n_main, self.seed, self.epoch, self.groups)
        per_rank = order[: len(self) * self.batch_size * self.world_size][self.rank::self.world_size]
        for b in range(self.start_batch, len(self)):
            chunk = per_rank[b * self.batch_size:(b + 1) * self.batch_size]
            keys: List[Key] = [("p", int(i), derive_seed(self.seed, self.epoch, self.rank, b, "p", k))
                               for k, i in enumerate(chunk)]
            if self.elite_batch_size:
                rng = rng_for(self.seed, self.epoch, self.rank, b, "elite")
                picks = rng.integers(self.n_elite, size=self.elite_batch_size)
                keys += [("e", int(j), derive_seed(self.seed, self.epoch, self.rank, b, "e", k))
                         for k, j in enumerate(picks)]
            yield keys

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "start_batch": self.start_batch}
