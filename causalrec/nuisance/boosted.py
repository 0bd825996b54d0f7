"""Gradient-boosted nuisance learner (XGBoost), fitted on top of an offset.

XGBoost rather than LightGBM: on this box both fit 40 small boosters and one 200k-row booster
in about the same time (2.8 / 2.8 s against 2.2 / 2.7 s, log loss 0.606 / 0.560 against
0.607 / 0.568), and XGBoost's standard wheel runs on CUDA (``device="cuda"``) and on Spark
(``xgboost.spark``), which the large-scale paths need. It is imported only when used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BoostedLearner"]


def _xgboost():
    from ..utils.extras import require
    return require("xgboost", "nuisance='boosted' (and 'auto')")


@dataclass(frozen=True)
class BoostedLearner:
    """Settings of the boosted nuisance models (XGBoost ``hist`` trees).

    Each model boosts on top of an offset (the segment GLM's linear predictor) given as
    XGBoost's ``base_margin``, so trees only add what the GLM misses. The number of rounds is
    chosen by early stopping on a validation share of the training rows (picked by row
    content, so it does not depend on row order); no tuning is needed by default.

    Parameters
    ----------
    learning_rate, max_depth, min_child_weight, reg_lambda : XGBoost tree settings.
    max_bin : histogram bins per feature.
    colsample_bytree : share of the columns each tree may split on.
    max_rounds : most boosting rounds; early_stopping_rounds : rounds without improvement
        of the validation loss before stopping (10: with 20 the ACIC benchmark took 1.2x the
        CPU for RMSE 0.111 instead of 0.113; the propensity boosters stop after ~8 rounds,
        so the patience was most of their rounds).
    validation_share : share of the training rows held out for early stopping.
    n_threads : threads per booster (fixed, so results do not depend on the machine).
    device : "cpu" or "cuda" (XGBoost's own device setting).
    """

    learning_rate: float = 0.3
    max_depth: int = 4
    min_child_weight: float = 10.0
    reg_lambda: float = 5.0
    max_bin: int = 64
    colsample_bytree: float = 1.0
    max_rounds: int = 300
    early_stopping_rounds: int = 10
    validation_share: float = 0.2
    n_threads: int = 1
    device: str = "cpu"

    def check(self) -> None:
        if not 0 < self.validation_share < 1:
            raise ValueError(f"validation_share must be in (0, 1), got {self.validation_share!r}")
        for name in ("max_depth", "max_bin", "max_rounds", "early_stopping_rounds", "n_threads"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.colsample_bytree <= 1:
            raise ValueError(f"colsample_bytree must be in (0, 1], got {self.colsample_bytree!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")

    def fit_predict(self, X, y, offset, X_test, offset_test, *, family, validation, seed,
                    categorical=False):
        """Fit on (X, y) with ``offset`` and return (mean predictions on X_test, rounds used).

        ``validation`` (bool per training row) marks the early-stopping rows; ``categorical``
        marks the last column of X as a category code (the item, in the pooled booster).
        """
        return self.fit_predict_offsets(X, y, [offset], X_test, [offset_test], family=family,
                                        validation=validation, seed=seed,
                                        categorical=categorical)[0]

    def shares_matrices(self, other) -> bool:
        """Whether this learner's fits and ``other``'s may share one row set's matrices
        (``fit_predict_offsets(matrices=...)``): the same settings, every column in every
        tree (a column kept out through ``skip`` needs ``colsample_bytree`` = 1)."""
        return self == other and self.colsample_bytree == 1

    def fit_predict_offsets(self, X, y, offsets, X_test, offsets_test, *, family, validation,
                            seed, categorical=False, matrices=None, skip=None):
        """``fit_predict`` once per (offset, test offset) pair on the same rows -> a list of
        (predictions, rounds). The rows' DMatrix is built once: XGBoost sketches its quantiles
        at the first fit (~100 ns a value, most of a small booster's time), the later fits
        reuse them.

        ``matrices`` (a dict the caller keeps per row set) carries the DMatrices to a later
        call on the same rows and columns, which only sets its labels: the propensity and the
        joint outcome model share them, the arm a column of both. ``skip`` is a column the
        fits must not use (the arm, in the propensity's): it gets feature weight 0 and
        ``colsample_bytree`` leaves exactly the other columns, so the trees are those fitted
        without it. XGBoost draws the columns by weighted keys, and a zero weight is raised
        to 1e-6, so the skipped column can still win a draw (~5e-6 a tree); a fit whose
        trees use it is fitted again on the matrix without it."""
        xgb = _xgboost()
        types = ["q"] * (X.shape[1] - 1) + ["c"] if categorical else None
        dm = lambda A, label=None: xgb.DMatrix(  # offsets are set per fit
            A, label=label, feature_types=types, enable_categorical=categorical,
            nthread=self.n_threads)
        params = dict(objective="binary:logistic" if family == "logistic" else "reg:squarederror",
                      eval_metric="logloss" if family == "logistic" else "rmse",
                      learning_rate=self.learning_rate, max_depth=self.max_depth,
                      min_child_weight=self.min_child_weight, reg_lambda=self.reg_lambda,
                      tree_method="hist", max_bin=self.max_bin, nthread=self.n_threads, seed=seed,
                      colsample_bytree=self.colsample_bytree,
                      device=self.device, base_score=0.5 if family == "logistic" else 0.0)
        fit, val = ~validation, validation
        if not val.any() or not fit.any():  # too few rows to hold any out: the offset alone
            return [(_mean(test, family), 0) for test in offsets_test]
        if matrices is not None and "train" in matrices:
            train, valid = matrices["train"], matrices["valid"]
            train.set_label(y[fit]), valid.set_label(y[val])
        else:
            train, valid = dm(X[fit], y[fit]), dm(X[val], y[val])
            if matrices is not None:
                matrices.update(train=train, valid=valid)
        if skip is not None or matrices is not None:  # a shared matrix keeps the last ones
            weights = np.ones(X.shape[1], np.float32)
            if skip is not None:  # int(colsample * columns) = the columns but one
                weights[skip] = 0.0
                params["colsample_bytree"] = (X.shape[1] - 0.5) / X.shape[1]
            train.set_info(feature_weights=weights)
        test_matrix = dm(X_test) if categorical else None  # the item code: a category
        out = []
        for offset, offset_test in zip(offsets, offsets_test):
            train.set_base_margin(offset[fit])
            valid.set_base_margin(offset[val])
            booster = xgb.train(params, train, self.max_rounds, evals=[(valid, "valid")],
                                early_stopping_rounds=self.early_stopping_rounds,
                                verbose_eval=False)
            if skip is not None and f"f{skip}" in booster.get_score(importance_type="weight"):
                keep = np.arange(X.shape[1]) != skip
                out += self.fit_predict_offsets(
                    X[:, keep], y, [offset], X_test[:, keep], [offset_test], family=family,
                    validation=validation, seed=seed, categorical=categorical)
                continue
            rounds = booster.best_iteration + 1
            if categorical:
                test_matrix.set_base_margin(offset_test)
                pred = booster.predict(test_matrix, iteration_range=(0, rounds))
            else:  # no DMatrix to build for the test rows (a few ms per fit)
                pred = booster.inplace_predict(X_test, iteration_range=(0, rounds),
                                               base_margin=offset_test)
            out.append((pred.astype(np.float64), rounds))
        return out


def _mean(eta, family):
    return 1.0 / (1.0 + np.exp(-eta)) if family == "logistic" else np.asarray(eta, np.float64)
