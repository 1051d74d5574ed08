"""Few-shot adapters on cached, frozen image features (docs/reference.md#evaluation-adapters), fixed.

All adapters take unit-norm projected features X (N×D), labels y, the zero-shot class prototypes T (K×D)
and the model's logit scale s. Fixes relative to the official code:

* one logit form, with the model's own ``s``, in training and in prediction (no hard-coded 100, no
  ``/N·s`` in training only);
* α, β (and the CLIP-Adapter residual ratio) are chosen on the **validation** split by grid search;
  test labels are never passed to any adapter;
* mini-batches (default 32) instead of batch size 1, reshuffled every epoch; because a few-shot train set
  is only a batch or two, training runs at least ``min_steps`` optimiser steps (the official batch-1 loop
  makes 40·N steps);
* one-hot values use the experiment's K, not the classes present in the shots.

Selection score on validation: balanced accuracy, ties broken by lower log-loss (computed with numpy: the
grid searches call it hundreds of times per fold, and scikit-learn's input validation would dominate the
run time; the tests check both against scikit-learn).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..inference.zero_shot import to_probabilities, zero_shot_logits

DEFAULT_ALPHAS: Tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
DEFAULT_BETAS: Tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 20.0, 50.0)
DEFAULT_RATIOS: Tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)


@dataclass
class AdapterOptimCfg:
    """Optimisation of the trainable adapters (official defaults, mini-batched)."""

    epochs: int = 40
    lr: float = 1e-3
    eps: float = 1e-4
    weight_decay: float = 0.01
    batch_size: int = 32
    seed: int = 0
    min_steps: int = 200


def selection_score(y_val: np.ndarray, probs: np.ndarray) -> Tuple[float, float]:
    """(balanced accuracy, −log-loss) on validation; compared lexicographically.

    Same values as ``balanced_accuracy_score`` (mean recall over the classes present) and ``log_loss``.
    """
    y = np.asarray(y_val, dtype=int)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-15, None)
    probs = probs / probs.sum(axis=1, keepdims=True)
    hit = probs.argmax(1) == y
    recall = [hit[y == c].mean() for c in np.unique(y)]
    nll = -np.log(probs[np.arange(len(y)), y]).mean()
    return float(np.mean(recall)), -float(nll)


def one_hot(y: np.ndarray | torch.Tensor, n_classes: int) -> torch.Tensor:
    return F.one_hot(torch.as_tensor(np.asarray(y), dtype=torch.long), n_classes).float()


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _batches(n: int, batch_size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


@contextmanager
def single_thread():
    """Tiny matrices train fastest on one thread; intra-op threads only add sync overhead (and stall badly
    when the CPU is shared). The previous setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _optimise(params, loss_fn, n: int, cfg: AdapterOptimCfg) -> None:
    """AdamW + per-step cosine annealing over all steps (as officially), reshuffled mini-batches,
    ``max(epochs · batches per epoch, min_steps)`` steps."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)
    steps = max(cfg.epochs * math.ceil(n / cfg.batch_size), cfg.min_steps)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    with single_thread():
        _steps(opt, sched, loss_fn, n, cfg, gen, steps)


def _steps(opt, sched, loss_fn, n: int, cfg: AdapterOptimCfg, gen: torch.Generator, steps: int) -> None:
    done = 0
    while done < steps:
        for idx in _batches(n, cfg.batch_size, gen):
            opt.zero_grad(set_to_none=True)
            loss_fn(idx).backward()
            opt.step()
            sched.step()
            done += 1
            if done == steps:
                break


# -- zero-shot as a predictor (shared interface) -----------------------------------------------------

class ZeroShot:
    """s · X Tᵀ; the baseline every adapter reduces to (Tip-Adapter with α = 0)."""

    def __init__(self, prototypes: torch.Tensor, scale: float):
        self.prototypes, self.scale = _t(prototypes), float(scale)
        self.hparams: Dict[str, float] = {}

    def logits(self, X) -> torch.Tensor:
        return zero_shot_logits(_t(X), self.prototypes, self.scale)

    def predict_proba(self, X) -> np.ndarray:
        with torch.no_grad():
            return to_probabilities(self.logits(X), multilabel=False).numpy()


# -- CLIP-Adapter -----------------------------------------------------------------------------------

class ClipAdapterModule(nn.Module):
    """R CLIP-Adapters side by side, one per residual ratio (officially 0.2):
    A_r(x) = ReLU(W₂ ReLU(W₁ x)), D → D/reduction → D, no biases;
    x'_r = normalize(ρ_r·A_r(x) + (1 − ρ_r)·x).

    The adapters share nothing but the input, so training them jointly (summed losses, element-wise AdamW)
    is the same as training each alone with the same batches; it just costs one loop instead of R.
    """

    def __init__(self, dim: int, reduction: int = 4, ratios: Sequence[float] = (0.2,)):
        super().__init__()
        hidden = max(1, dim // reduction)
        self.register_buffer("ratios", torch.tensor(list(ratios), dtype=torch.float32).view(-1, 1, 1))
        pairs = [(nn.Linear(dim, hidden, bias=False).weight, nn.Linear(hidden, dim, bias=False).weight) for _ in ratios]
        self.w1 = nn.Parameter(torch.stack([p[0] for p in pairs]).detach())
        self.w2 = nn.Parameter(torch.stack([p[1] for p in pairs]).detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×D -> R×B×D adapted, unit-norm features."""
        h = F.relu(torch.einsum("rhd,bd->rbh", self.w1, x))
        a = F.relu(torch.einsum("rdh,rbh->rbd", self.w2, h))
        return F.normalize(self.ratios * a + (1 - self.ratios) * x, dim=-1)

    def select(self, r: int) -> "ClipAdapterModule":
        """A single-adapter module holding adapter ``r``."""
        out = ClipAdapterModule(self.w1.shape[2], 1, [float(self.ratios[r])])
        out.w1 = nn.Parameter(self.w1[r:r + 1].detach().clone())
        out.w2 = nn.Parameter(self.w2[r:r + 1].detach().clone())
        return out.eval()


class ClipAdapter(ZeroShot):
    """CLIP-Adapter trained with cross-entropy on s · A(x) Tᵀ; T and s frozen; ratio chosen on validation."""

    def __init__(self, prototypes, scale, reduction: int = 4):
        super().__init__(prototypes, scale)
        self.reduction = reduction
        self.module: ClipAdapterModule | None = None

    def train_bank(self, X, y, ratios: Sequence[float], cfg: AdapterOptimCfg) -> ClipAdapterModule:
        """One adapter per ratio, trained together on the sum of their cross-entropies."""
        X, yt = _t(X), torch.as_tensor(np.asarray(y), dtype=torch.long)
        torch.manual_seed(cfg.seed)
        bank = ClipAdapterModule(X.shape[1], self.reduction, ratios)

        def loss(idx):
            logits = zero_shot_logits(bank(X[idx]).flatten(0, 1), self.prototypes, self.scale)
            return F.cross_entropy(logits, yt[idx].repeat(len(ratios)), reduction="sum") / len(idx)

        _optimise(bank.parameters(), loss, len(X), cfg)
        return bank

    def fit(self, X, y, X_val, y_val, ratios: Sequence[float] = DEFAULT_RATIOS, cfg: AdapterOptimCfg = AdapterOptimCfg()):
        bank = self.train_bank(X, y, ratios, cfg)
        with torch.no_grad():
            val = zero_shot_logits(bank(_t(X_val)), self.prototypes, self.scale).softmax(-1).numpy()  # R×Nv×K
        best = max(range(len(ratios)), key=lambda r: (selection_score(y_val, val[r]), -r))
        self.module = bank.select(best)
        self.hparams = {"ratio": float(ratios[best])}
        return self

    def logits(self, X) -> torch.Tensor:
        with torch.no_grad():
            return zero_shot_logits(self.module(_t(X))[0], self.prototypes, self.scale)


# -- Tip-Adapter / Tip-Adapter-F --------------------------------------------------------------------

def tip_logits(X: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, prototypes: torch.Tensor, scale: float,
               alpha: float, beta: float) -> torch.Tensor:
    """s · x Tᵀ + α · exp(−β (1 − x Kᵀ)) L — the single form used for fitting and prediction."""
    cache = torch.exp(-beta * (1.0 - X @ keys.T)) @ values
    return zero_shot_logits(X, prototypes, scale) + alpha * cache


class TipAdapter(ZeroShot):
    """Training-free Tip-Adapter: cache keys = train features, values = one-hot labels; α, β on validation."""

    def __init__(self, prototypes, scale, alpha: float = 1.0, beta: float = 5.0):
        super().__init__(prototypes, scale)
        self.alpha, self.beta = float(alpha), float(beta)
        self.keys = self.values = None

    def build_cache(self, X, y) -> "TipAdapter":
        self.keys = _t(X).clone()
        self.values = one_hot(y, self.prototypes.shape[0])
        return self

    def search(self, X_val, y_val, alphas: Sequence[float] = DEFAULT_ALPHAS,
               betas: Sequence[float] = DEFAULT_BETAS) -> "TipAdapter":
        """Grid search of (α, β) on validation, vectorised over α."""
        Xv = _t(X_val)
        with torch.no_grad():
            clip = zero_shot_logits(Xv, self.prototypes, self.scale)
            affinity = Xv @ self.keys.T
            best = None
            for beta in betas:
                cache = torch.exp(-beta * (1.0 - affinity)) @ self.values
                for alpha in alphas:
                    score = selection_score(y_val, (clip + alpha * cache).softmax(-1).numpy())
                    if best is None or score > best[0]:
                        best = (score, float(alpha), float(beta))
        _, self.alpha, self.beta = best
        self.hparams = {"alpha": self.alpha, "beta": self.beta}
        return self

    def fit(self, X, y, X_val, y_val, alphas=DEFAULT_ALPHAS, betas=DEFAULT_BETAS) -> "TipAdapter":
        return self.build_cache(X, y).search(X_val, y_val, alphas, betas)

    def logits(self, X) -> torch.Tensor:
        with torch.no_grad():
            return tip_logits(_t(X), self.keys, self.values, self.prototypes, self.scale, self.alpha, self.beta)


class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: the cache keys are fine-tuned (init = train features) with the same logit form,
    trained at (α, β) = (init_alpha, init_beta), then (α, β) re-searched on validation (as in Tip-Adapter)."""

    def fit(self, X, y, X_val, y_val, alphas=DEFAULT_ALPHAS, betas=DEFAULT_BETAS, cfg: AdapterOptimCfg = AdapterOptimCfg(),
            init_alpha: float = 1.0, init_beta: float = 5.0) -> "TipAdapterF":
        X = _t(X)
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
        self.build_cache(X, y)
        keys = nn.Parameter(self.keys.clone())
        _optimise([keys], lambda idx: F.cross_entropy(
            tip_logits(X[idx], keys, self.values, self.prototypes, self.scale, init_alpha, init_beta), yt[idx]),
            len(X), cfg)
        self.keys = keys.detach()
        return self.search(X_val, y_val, alphas, betas)


# -- image-only adapters (no text tower: no prototypes from prompts) ---------------------------------------

DEFAULT_TEMPERATURES: Tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0)
DEFAULT_NEIGHBOURS: Tuple[int, ...] = (1, 3, 5, 10, 20)


class ClassPrototypes:
    """Nearest class mean: a class's prototype is the normalised mean of its unit-norm support features;
    logits τ · cos(x, prototype). τ only sharpens the probabilities (the decisions do not change), so it is chosen
    on validation by log-loss."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.prototypes = None
        self.temperature = 10.0
        self.hparams: Dict[str, float] = {}

    def fit(self, X, y, X_val, y_val, temperatures: Sequence[float] = DEFAULT_TEMPERATURES) -> "ClassPrototypes":
        X = F.normalize(_t(X), dim=-1)
        self.prototypes = F.normalize(one_hot(y, self.n_classes).T @ X, dim=-1)  # a class without shots: zero row
        best = None
        for tau in temperatures:
            self.temperature = float(tau)
            score = selection_score(y_val, self.predict_proba(X_val))
            if best is None or score > best[0]:
                best = (score, float(tau))
        self.temperature = best[1]
        self.hparams = {"temperature": self.temperature}
        return self

    def predict_proba(self, X) -> np.ndarray:
        with torch.no_grad():
            return (self.temperature * F.normalize(_t(X), dim=-1) @ self.prototypes.T).softmax(-1).numpy()


class NearestNeighbours:
    """k nearest support images by cosine similarity, similarity-weighted votes (scikit-learn); k on validation."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.model = None
        self.hparams: Dict[str, float] = {}

    def _fit_k(self, X, y, k: int):
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance").fit(np.asarray(X), y)

    def fit(self, X, y, X_val, y_val, neighbours: Sequence[int] = DEFAULT_NEIGHBOURS) -> "NearestNeighbours":
        ks = sorted({min(int(k), len(y)) for k in neighbours})
        best = None
        for k in ks:
            self.model = self._fit_k(X, y, k)
            score = selection_score(y_val, self.predict_proba(X_val))
            if best is None or score > best[0]:
                best = (score, k)
        self.model = self._fit_k(X, y, best[1])
        self.hparams = {"k": best[1]}
        return self

    def predict_proba(self, X) -> np.ndarray:
        """N×K over all of the experiment's classes (a class absent from the support set gets 0)."""
        out = np.zeros((len(X), self.n_classes))
        out[:, self.model.classes_] = self.model.predict_proba(np.asarray(X))
        return out
