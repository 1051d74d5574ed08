"""Linear probe: scikit-learn logistic regression on frozen features (docs/reference.md#evaluation-linear-probe).

The official probe uses a fixed C = 0.316; here C is chosen from a log grid by validation balanced
accuracy (ties: lower validation log-loss), unless a fixed ``c`` is asked for. The grid is walked in
increasing C with warm starts (a regularisation path, like ``LogisticRegressionCV``). The final model is
the one fit on the train split only (default), or a refit on train + validation (``refit_on_train_val``).
"""
from __future__ import annotations

import copy
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from .adapters import selection_score

DEFAULT_C_GRID = tuple(float(c) for c in np.logspace(-3, 4, 15))


class LinearProbe:
    """``LogisticRegression(max_iter=1000, class_weight="balanced")`` with C chosen on validation."""

    def __init__(self, n_classes: int, c: Optional[float] = None, c_grid: Sequence[float] = DEFAULT_C_GRID,
                 max_iter: int = 1000, class_weight: Optional[str] = "balanced", refit_on_train_val: bool = False,
                 random_state: int = 0):
        self.n_classes = n_classes
        self.c, self.c_grid = c, tuple(c_grid)
        self.max_iter, self.class_weight = max_iter, class_weight
        self.refit_on_train_val, self.random_state = refit_on_train_val, random_state
        self.model: Optional[LogisticRegression] = None
        self.hparams: Dict[str, float] = {}

    @classmethod
    def from_cfg(cls, cfg, n_classes: int, refit_on_train_val: bool = False) -> "LinearProbe":
        """From a ``LinearProbeCfg`` (C or its grid, max_iter); refitting on train+val is the caller's choice."""
        return cls(n_classes, cfg.c, cfg.c_grid, cfg.max_iter, refit_on_train_val=refit_on_train_val)

    def _new(self, c: float, warm_start: bool = False) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=self.max_iter, class_weight=self.class_weight,
                                  random_state=self.random_state, warm_start=warm_start)

    def _fit_one(self, X: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._new(c).fit(X, y)

    def _search(self, X, y, X_val, y_val) -> Tuple[float, LogisticRegression]:
        """Fit along the C grid in increasing order, warm-starting each fit from the previous solution (the
        regularisation path, as ``LogisticRegressionCV`` does); keep the best model on validation."""
        model = self._new(1.0, warm_start=True)
        best = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for c in sorted(self.c_grid):
                model.set_params(C=c).fit(X, y)
                score = selection_score(y_val, self._proba(model, X_val))
                if best is None or score > best[0]:
                    best = (score, c, copy.deepcopy(model))
        return best[1], best[2]

    def _proba(self, model: LogisticRegression, X: np.ndarray) -> np.ndarray:
        """N×K probabilities over all K classes (sklearn only knows the classes seen in training)."""
        out = np.zeros((len(X), self.n_classes))
        out[:, model.classes_] = model.predict_proba(X)
        return out

    def fit(self, X, y, X_val=None, y_val=None) -> "LinearProbe":
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=int)
        if len(np.unique(y)) < 2:
            raise ValueError("the linear probe needs at least two classes in the train split")
        if self.c is not None:
            c = float(self.c)
        else:
            if X_val is None or y_val is None or len(y_val) == 0:
                raise ValueError("choosing C needs a validation split (or pass a fixed c, e.g. 0.316)")
            X_val, y_val = np.asarray(X_val, dtype=np.float64), np.asarray(y_val, dtype=int)
            c, self.model = self._search(X, y, X_val, y_val)
        if self.refit_on_train_val and X_val is not None and len(X_val):
            X, y = np.concatenate([X, np.asarray(X_val, dtype=np.float64)]), np.concatenate([y, np.asarray(y_val)])
            self.model = self._fit_one(X, y, c)
        elif self.c is not None:
            self.model = self._fit_one(X, y, c)
        self.hparams = {"C": c}
        return self

    def predict_proba(self, X) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("LinearProbe.fit first")
        return self._proba(self.model, np.asarray(X, dtype=np.float64))

    def torch_head(self, bias: bool = True):
        """The fitted probe as a ``torch.nn.Linear`` producing K logits (LP-FT head initialisation).

        Binary sklearn models have one coefficient row w: the head gets rows (−w/2, +w/2) so that its
        softmax equals sklearn's sigmoid. Classes absent from the training
        shots get zero rows and a very negative bias.
        """
        import torch

        model = self.model
        if model is None:
            raise RuntimeError("LinearProbe.fit first")
        W = np.zeros((self.n_classes, model.coef_.shape[1]))
        b = np.full(self.n_classes, -1e4 if len(model.classes_) < self.n_classes else 0.0)
        if len(model.classes_) == 2 and model.coef_.shape[0] == 1:
            neg, pos = model.classes_
            W[pos], W[neg] = model.coef_[0] / 2, -model.coef_[0] / 2
            b[pos], b[neg] = model.intercept_[0] / 2, -model.intercept_[0] / 2
        else:
            W[model.classes_], b[model.classes_] = model.coef_, model.intercept_
        head = torch.nn.Linear(W.shape[1], self.n_classes, bias=bias)
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(W, dtype=torch.float32))
            if bias:
                head.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        return head
