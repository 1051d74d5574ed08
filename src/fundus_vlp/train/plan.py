"""A pretraining run's plan, computed once: the method's data needs, the batch shapes, the weights it starts
from and the step counts. The data layer receives the batch shapes, the ``Trainer`` and ``pretrain --dry-run``
read the same plan, so the steps a dry run prints are the steps the run takes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..config import ModelCfg
from ..data.config import BatchPlan, DataNeeds
from ..methods import get_method
from .config import PretrainCfg


@dataclass
class RunPlan:
    method: str
    needs: DataNeeds
    batches: BatchPlan
    init: Union[str, ModelCfg]  # a saved model folder (init_from) or the architecture to build
    epochs: int
    max_steps: int = 0  # > 0: stop after this many optimiser steps
    steps_per_epoch: int = 0  # known once the data is built (count_steps)
    total_steps: int = 0

    def count_steps(self, micro_batches_per_epoch: int) -> "RunPlan":
        """Optimiser steps from the sampler's micro-batches per epoch (whole steps only)."""
        self.steps_per_epoch = micro_batches_per_epoch // self.batches.accum_freq
        if self.steps_per_epoch == 0:
            raise ValueError(f"fewer micro-batches per epoch ({micro_batches_per_epoch}) than train.accum_freq "
                             f"({self.batches.accum_freq}): lower train.batch_size or train.accum_freq")
        planned = self.steps_per_epoch * self.epochs
        self.total_steps = min(planned, self.max_steps) if self.max_steps > 0 else planned
        return self


def plan_run(cfg: PretrainCfg) -> RunPlan:
    """Everything about the run that the config decides before any data or model is built."""
    train = cfg.train
    if train.batch_size % train.accum_freq:
        raise ValueError(f"train.batch_size {train.batch_size} is not divisible by train.accum_freq {train.accum_freq}")
    needs = get_method(cfg.method).data_needs(cfg.method_options)
    elite = (train.elite_batch_size or train.batch_size) // train.accum_freq if needs.elite else 0
    return RunPlan(cfg.method, needs, BatchPlan(train.batch_size // train.accum_freq, elite, train.accum_freq),
                   cfg.init_from or cfg.model, train.epochs, train.max_steps)
