"""One fit loop for the fine-tuners: train an epoch, validate, keep the best epoch, stop on patience.

``fit_select`` owns the selection logic that fine-tuning, segmentation transfer and report generation share;
each caller supplies what differs (its train step and its validation) as two callables:

* ``train_epoch(epoch) -> dict`` runs one epoch and returns its scalars (``{"train_loss": ...}``);
* ``validate(epoch) -> dict`` scores the current weights; it must hold ``metric`` and may hold
  ``trivial: True`` when the prediction is degenerate (e.g. the same class everywhere). Other entries are
  kept: scalars go to the history, everything (arrays included) to ``FitResult.best`` for the selected epoch.

Selection rules (in this order): a finite value beats a NaN/inf one; a non-trivial epoch beats a trivial one
(so a trivial epoch is selected only while no non-trivial epoch exists, and the result says so); then the
better value under ``mode`` wins, ties keeping the earlier epoch. Patience counts validations without a new
selection. The selected weights are restored into ``modules`` at the end, which are left in eval mode.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn
from tqdm.auto import tqdm

_logger = logging.getLogger(__name__)

SELECT_MODES = ("max", "min")
# why training stopped
STOP_COMPLETED, STOP_PATIENCE, STOP_NO_EPOCHS = "completed", "patience", "no epochs"


@dataclass
class FitResult:
    """What ``fit_select`` chose and why it stopped.

    ``best_epoch`` is -1 when the initial weights were selected (``validate_initial``) or nothing ran;
    ``best`` is the selected epoch's full validation dict (non-scalar entries included); ``history`` holds one
    JSON-ready dict per epoch (``epoch``, the train scalars, and on validated epochs the validation scalars,
    ``validated`` and ``trivial``).
    """

    best_epoch: int
    best_value: float
    best: Dict[str, Any]
    history: List[Dict[str, Any]]
    stop_reason: str
    best_trivial: bool = False
    epochs_run: int = 0

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason == STOP_PATIENCE

    def summary(self) -> Dict[str, Any]:
        """The JSON-ready part: selection, stop reason and the per-epoch history."""
        return {"best_epoch": self.best_epoch, "best_value": self.best_value, "best_trivial": self.best_trivial,
                "stop_reason": self.stop_reason, "epochs_run": self.epochs_run, "history": self.history}


@dataclass
class _Candidate:
    epoch: int
    value: float
    trivial: bool
    record: Dict[str, Any] = field(default_factory=dict)


def _as_modules(modules: Union[nn.Module, Sequence[nn.Module]]) -> List[nn.Module]:
    return [modules] if isinstance(modules, nn.Module) else list(modules)


def _snapshot(modules: Sequence[nn.Module]) -> List[Dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def _scalars(record: Mapping[str, Any]) -> Dict[str, Any]:
    """The JSON-ready entries of a record (numbers, bools, strings, None; 0-d tensors become numbers)."""
    out = {}
    for k, v in record.items():
        if isinstance(v, torch.Tensor) and v.ndim == 0:
            v = v.item()
        elif hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # numpy scalar
            v = v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            out[k] = v
    return out


def is_better(new: _Candidate, best: Optional[_Candidate], mode: str) -> bool:
    """The selection order of the module docstring: finite > non-finite, non-trivial > trivial, then value."""
    if best is None:
        return True
    new_ok, best_ok = math.isfinite(new.value), math.isfinite(best.value)
    if new_ok != best_ok:
        return new_ok
    if new.trivial != best.trivial:
        return not new.trivial
    if not new_ok:
        return False
    return new.value > best.value if mode == "max" else new.value < best.value


def _candidate(epoch: int, record: Mapping[str, Any], metric: str) -> _Candidate:
    if metric not in record:
        raise KeyError(f"validation at epoch {epoch} returned no {metric!r} (got {sorted(record)})")
    return _Candidate(epoch, float(record[metric]), bool(record.get("trivial", False)), dict(record))


def fit_select(train_epoch: Callable[[int], Mapping[str, Any]], validate: Callable[[int], Mapping[str, Any]], *,
               modules: Union[nn.Module, Sequence[nn.Module]], metric: str, mode: str = "max", epochs: int,
               patience: Optional[int] = None, eval_every: int = 1, validate_initial: bool = False,
               desc: str = "fit", progress: bool = True, log: Callable[..., None] = _logger.info) -> FitResult:
    """Train for up to ``epochs`` epochs, validating every ``eval_every`` epochs and after the last one; keep
    the best validation under ``metric``/``mode`` (trivial epochs last, see the module docstring); stop after
    ``patience`` validations without a new selection (None: never); restore the selected weights.

    ``validate_initial`` scores the weights before training too (epoch -1), making them a candidate.
    """
    if mode not in SELECT_MODES:
        raise ValueError(f"selection mode must be one of {SELECT_MODES}, got {mode!r}")
    if epochs < 0 or eval_every < 1 or (patience is not None and patience < 1):
        raise ValueError(f"need epochs >= 0, eval_every >= 1 and patience >= 1 or None "
                         f"(got {epochs}, {eval_every}, {patience})")
    mods = _as_modules(modules)
    history: List[Dict[str, Any]] = []
    best: Optional[_Candidate] = None
    best_state = _snapshot(mods)
    bad, reason, ran = 0, STOP_COMPLETED if epochs else STOP_NO_EPOCHS, 0

    def consider(epoch: int, record: Mapping[str, Any], row: Dict[str, Any]) -> bool:
        nonlocal best, best_state
        cand = _candidate(epoch, record, metric)
        row.update(_scalars({k: v for k, v in record.items() if k != "epoch"}))
        row.update(validated=True, trivial=cand.trivial)
        if cand.trivial:
            log("epoch %d: trivial validation (%s %.4f), selected only while no other epoch exists",
                epoch, metric, cand.value)
        if is_better(cand, best, mode):
            best, best_state = cand, _snapshot(mods)
            return True
        return False

    if validate_initial:
        row = {"epoch": -1}
        consider(-1, validate(-1), row)
        history.append(row)
    bar = tqdm(range(epochs), desc=desc, disable=None if progress else True, leave=False)
    for epoch in bar:
        train = train_epoch(epoch)
        ran = epoch + 1
        row = {"epoch": epoch, **_scalars(train if isinstance(train, Mapping) else {"train_loss": train})}
        history.append(row)
        if (epoch + 1) % eval_every and epoch + 1 != epochs:
            continue
        improved = consider(epoch, validate(epoch), row)
        bar.set_postfix({metric: f"{row[metric]:.4g}", "best": best.epoch})
        bad = 0 if improved else bad + 1
        if patience is not None and bad >= patience and epoch + 1 < epochs:
            reason = STOP_PATIENCE
            log("early stop at epoch %d: %d validations without a better %s (best epoch %d, %.4f)",
                epoch, bad, metric, best.epoch, best.value)
            break
    for m, state in zip(mods, best_state):
        m.load_state_dict(state)
        m.eval()
    if best is None:
        return FitResult(-1, float("nan"), {}, history, reason, False, ran)
    if best.trivial:
        log("every validated epoch was trivial; epoch %d kept (%s %.4f)", best.epoch, metric, best.value)
    for row in history:
        row["selected"] = row["epoch"] == best.epoch
    return FitResult(best.epoch, best.value, best.record, history, reason, best.trivial, ran)
