"""fit_select on scripted validation scores: the epoch it picks, where patience stops, the weights it restores,
trivial epochs and eval_every, all computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fundus_vlp.eval.fit import STOP_COMPLETED, STOP_NO_EPOCHS, STOP_PATIENCE, fit_select


def scripted(scores, trivial=(), extra=None):
    """A one-weight module whose weight is set to the epoch number by each train step, and a validation that
    reads the next scripted score (so the restored weight names the restored epoch)."""
    net = nn.Linear(1, 1, bias=False)
    nn.init.constant_(net.weight, -1.0)
    calls = {"train": [], "val": []}

    def train_epoch(epoch):
        calls["train"].append(epoch)
        with torch.no_grad():
            net.weight.fill_(float(epoch))
        net.train()
        return {"train_loss": 10.0 - epoch}

    def validate(epoch):
        calls["val"].append(epoch)
        rec = {"score": scores[epoch], "trivial": epoch in trivial}
        if extra is not None:
            rec["probs"] = np.full(2, epoch)
        return rec

    return net, train_epoch, validate, calls


def test_max_picks_the_best_epoch_and_restores_its_weights():
    scores = [0.2, 0.5, 0.4, 0.7, 0.6]
    net, tr, va, calls = scripted(scores, extra=True)
    res = fit_select(tr, va, modules=net, metric="score", mode="max", epochs=5, progress=False)
    assert res.best_epoch == 3 and res.best_value == pytest.approx(0.7)
    assert net.weight.item() == 3.0 and not net.training  # epoch 3's weights, eval mode
    assert res.stop_reason == STOP_COMPLETED and not res.stopped_early and res.epochs_run == 5
    assert [h["epoch"] for h in res.history] == [0, 1, 2, 3, 4]
    assert [h["train_loss"] for h in res.history] == [10.0, 9.0, 8.0, 7.0, 6.0]
    assert [h["score"] for h in res.history] == scores
    assert [h["selected"] for h in res.history] == [False, False, False, True, False]
    assert "probs" not in res.history[0] and list(res.best["probs"]) == [3, 3]  # arrays only in `best`


def test_min_mode_and_ties_keep_the_earlier_epoch():
    net, tr, va, _ = scripted([0.9, 0.3, 0.3, 0.5])
    res = fit_select(tr, va, modules=[net], metric="score", mode="min", epochs=4, progress=False)
    assert res.best_epoch == 1 and net.weight.item() == 1.0


def test_patience_stops_after_that_many_validations_without_improvement():
    # best at epoch 1; epochs 2, 3 are worse -> patience 2 stops after epoch 3, epoch 4 never runs
    net, tr, va, calls = scripted([0.1, 0.8, 0.5, 0.6, 0.9, 0.95])
    res = fit_select(tr, va, modules=net, metric="score", epochs=6, patience=2, progress=False)
    assert calls["train"] == [0, 1, 2, 3]
    assert res.stop_reason == STOP_PATIENCE and res.stopped_early
    assert res.best_epoch == 1 and net.weight.item() == 1.0 and res.epochs_run == 4


def test_eval_every_validates_every_kth_and_the_last_epoch_and_patience_counts_validations():
    net, tr, va, calls = scripted([0.0, 0.9, 0.0, 0.5, 0.0, 0.2, 0.1])
    res = fit_select(tr, va, modules=net, metric="score", epochs=7, eval_every=2, patience=3, progress=False)
    assert calls["val"] == [1, 3, 5, 6]
    assert [h["validated"] for h in res.history if "validated" in h] == [True] * 4
    assert "score" not in res.history[0] and "validated" not in res.history[2]
    assert res.best_epoch == 1 and res.stop_reason == STOP_COMPLETED  # 3 bad validations, at the last epoch


def test_trivial_epochs_lose_to_any_non_trivial_one_and_are_flagged():
    # epoch 0 predicts one class everywhere with a high score (as all-vessel Dice would); it must not win
    net, tr, va, _ = scripted([0.9, 0.2, 0.4, 0.95], trivial={0, 3})
    res = fit_select(tr, va, modules=net, metric="score", epochs=4, progress=False)
    assert res.best_epoch == 2 and net.weight.item() == 2.0 and not res.best_trivial
    assert [h["trivial"] for h in res.history] == [True, False, False, True]


def test_all_trivial_keeps_the_best_trivial_epoch_and_says_so():
    net, tr, va, _ = scripted([0.3, 0.6, 0.5], trivial={0, 1, 2})
    res = fit_select(tr, va, modules=net, metric="score", epochs=3, progress=False)
    assert res.best_epoch == 1 and res.best_trivial and res.summary()["best_trivial"] is True


def test_nan_never_wins_and_a_trivial_epoch_does_not_reset_patience():
    net, tr, va, calls = scripted([0.5, math.nan, 0.99, 0.7, 0.8], trivial={2})
    res = fit_select(tr, va, modules=net, metric="score", epochs=5, patience=2, progress=False)
    assert calls["train"] == [0, 1, 2] and res.best_epoch == 0 and res.stopped_early


def test_initial_weights_are_a_candidate_and_zero_epochs_restore_them():
    net, tr, va, _ = scripted({-1: 0.9, 0: 0.1, 1: 0.2})
    res = fit_select(tr, va, modules=net, metric="score", epochs=2, validate_initial=True, progress=False)
    assert res.best_epoch == -1 and net.weight.item() == -1.0 and res.history[0]["epoch"] == -1
    net, tr, va, _ = scripted({})
    res = fit_select(tr, va, modules=net, metric="score", epochs=0, progress=False)
    assert res.best_epoch == -1 and res.stop_reason == STOP_NO_EPOCHS and res.history == []


def test_bad_arguments_and_a_missing_metric_are_named():
    net, tr, va, _ = scripted([0.1])
    with pytest.raises(ValueError, match="mode"):
        fit_select(tr, va, modules=net, metric="score", mode="best", epochs=1)
    with pytest.raises(ValueError, match="patience"):
        fit_select(tr, va, modules=net, metric="score", epochs=1, patience=0)
    with pytest.raises(KeyError, match="'dice'"):
        fit_select(tr, va, modules=net, metric="dice", epochs=1, progress=False)


def test_selection_really_trains_a_toy_regression():
    # a real optimiser: validation loss on held-out points falls, the restored weights are the best epoch's
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 32)[:, None]
    y = 3 * x + 0.5
    net = nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.3)
    snaps = {}

    def train_epoch(epoch):
        loss = nn.functional.mse_loss(net(x[::2]), y[::2])
        opt.zero_grad()
        loss.backward()
        opt.step()
        snaps[epoch] = net.weight.item()
        return {"train_loss": loss.item()}

    def validate(epoch):
        with torch.no_grad():
            return {"val_loss": nn.functional.mse_loss(net(x[1::2]), y[1::2]).item()}

    res = fit_select(train_epoch, validate, modules=net, metric="val_loss", mode="min", epochs=20, progress=False)
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(losses)) and losses[-1] < 0.1 * losses[0]
    assert net.weight.item() == snaps[res.best_epoch]
