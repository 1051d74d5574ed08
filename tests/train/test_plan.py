"""A run's plan (batch shapes, steps, init weights) is computed once: the data layer, the Trainer and
`pretrain --dry-run` all follow the same numbers."""
from __future__ import annotations

import pytest

from conftest import first_batch, pretrain_overrides
from fundus_vlp.cli.main import main
from fundus_vlp.config.loading import build_config
from fundus_vlp.data.config import BatchPlan
from fundus_vlp.train.config import PretrainCfg
from fundus_vlp.train.plan import plan_run

PUBLIC_ROWS = 24  # conftest.make_image_dataset: 3 classes x 8 images


@pytest.mark.parametrize("batch, elite, accum, epochs, max_steps", [(4, 0, 1, 2, 0), (8, 2, 2, 3, 5)])
def test_data_trainer_and_dry_run_follow_one_plan(batch, elite, accum, epochs, max_steps, image_dataset,
                                                   tiny_overrides, tmp_path, capsys):
    from fundus_vlp.train.loop import Trainer, dry_run

    ov = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "keepfit", run_name="plan", **{
        "train.batch_size": batch, "train.elite_batch_size": elite, "train.accum_freq": accum,
        "train.epochs": epochs, "train.max_steps": max_steps})
    cfg = build_config(PretrainCfg, [], ov, has_model=True)
    plan = plan_run(cfg)
    assert plan.batches == BatchPlan(batch // accum, (elite or batch) // accum, accum) and plan.init == cfg.model
    steps_per_epoch = PUBLIC_ROWS // (batch // accum) // accum
    total = min(steps_per_epoch * epochs, max_steps) if max_steps else steps_per_epoch * epochs

    dry = dry_run(cfg, workers=1)
    assert not dry.error and (dry.run.steps_per_epoch, dry.run.total_steps) == (steps_per_epoch, total)
    trainer = Trainer(cfg)
    assert trainer.plan == dry.run and (trainer.steps_per_epoch, trainer.total_steps) == (steps_per_epoch, total)
    micro = first_batch(trainer)
    assert micro["main"]["images"].shape[0] == plan.batches.micro
    assert micro["elite"]["images"].shape[0] == plan.batches.elite_micro
    assert main(["pretrain", "--dry-run", "--workers", "1", *ov]) == 0
    assert f"{steps_per_epoch} per epoch x {epochs} epochs -> {total} optimiser steps" in capsys.readouterr().out


def test_impossible_plans_are_refused_before_anything_is_built(image_dataset, tiny_overrides, tmp_path):
    from fundus_vlp.train.loop import Trainer

    ov = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "flair", run_name="bad")
    with pytest.raises(ValueError, match="batch_size 6 is not divisible by train.accum_freq 4"):
        Trainer(build_config(PretrainCfg, [], ov + ["train.batch_size=6", "train.accum_freq=4"], has_model=True))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match=r"fewer micro-batches per epoch \(1\) than train.accum_freq \(2\)"):
        Trainer(build_config(PretrainCfg, [], ov + ["train.batch_size=32", "train.accum_freq=2"], has_model=True))
