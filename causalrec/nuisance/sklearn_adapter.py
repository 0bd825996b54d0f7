"""Any scikit-learn-compatible estimator as a nuisance learner.

scikit-learn estimators take no offset, so the segment GLM's linear predictor enters as an
extra feature: the pooled (tail) model can then keep the GLM's item-level structure and
learn what it misses. Every fit works on a fresh ``sklearn.base.clone``.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import clone

__all__ = ["SklearnLearner", "check_propensity_learner"]


def check_propensity_learner(estimator) -> None:
    if not hasattr(estimator, "predict_proba"):
        raise ValueError(f"nuisance: the propensity model must have predict_proba (a classifier); "
                         f"{type(estimator).__name__} has none")


class SklearnLearner:
    """Adapter giving a scikit-learn estimator the learners' ``fit_predict`` interface.

    For a 0/1 target the estimator's ``predict_proba[:, 1]`` is used when it has one (a
    classifier), otherwise ``predict`` (a regressor of the probability); for a continuous
    outcome, ``predict``. ``validation`` rows are not held out: the estimator's own settings
    decide about early stopping (e.g. ``HistGradientBoosting*(early_stopping=True)``).
    """

    def __init__(self, estimator):
        if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
            raise ValueError(f"nuisance: expected a scikit-learn estimator (with fit and "
                             f"get_params), got {estimator!r}")
        self.estimator = estimator

    def check(self) -> None:
        pass

    def fit_predict(self, X, y, offset, X_test, offset_test, *, family, validation, seed,
                    categorical=False):
        if categorical:  # an item code is no numeric feature; the GLM offset carries the item
            X, X_test = X[:, :-1], X_test[:, :-1]
        model = clone(self.estimator)
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
        features = lambda A, eta: np.column_stack([A, eta])
        target = y.astype(np.int64) if family == "logistic" and hasattr(model, "predict_proba") else y
        if family == "logistic" and len(np.unique(target)) < 2:  # one class: nothing to learn
            return np.full(len(X_test), float(target[0]) if len(target) else 0.5), 0
        model.fit(features(X, offset), target)
        Z = features(X_test, offset_test)
        if family == "logistic" and hasattr(model, "predict_proba"):
            pred = model.predict_proba(Z)[:, list(model.classes_).index(1)]
        else:
            pred = model.predict(Z)
        return np.asarray(pred, dtype=np.float64), 0
