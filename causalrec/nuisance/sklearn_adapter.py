"""Any scikit-learn-compatible estimator as a nuisance learner.

scikit-learn estimators take no offset, so the segment GLM's linear predictor enters as an
extra feature: the pooled (tail) model can then keep the GLM's item-level structure and
learn what it misses. Every fit works on a fresh ``sklearn.base.clone``.
"""
from __future__ import annotations

import inspect

import numpy as np
from sklearn.base import clone

__all__ = ["SklearnLearner", "check_propensity_learner"]

# HistGradientBoosting's categorical features must be codes below its bin count
MAX_ITEM_CATEGORIES = 255


def check_propensity_learner(estimator) -> None:
    if not hasattr(estimator, "predict_proba"):
        raise ValueError(f"nuisance: the propensity model must have predict_proba (a classifier); "
                         f"{type(estimator).__name__} has none")


class SklearnLearner:
    """Adapter giving a scikit-learn estimator the learners' ``fit_predict`` interface.

    For a 0/1 target the estimator's ``predict_proba[:, 1]`` is used when it has one (a
    classifier), otherwise ``predict`` (a regressor of the probability); for a continuous
    outcome, ``predict``. An estimator whose ``fit`` takes a validation set (``X_val``, e.g.
    ``HistGradientBoosting*``) and whose ``early_stopping`` is not False stops on the
    ``validation`` rows (whole units when the log has a ``unit`` role): its own random split
    would hold out copies of training units and stop late, on rows it has memorised.
    Otherwise the estimator's own settings decide about early stopping. An estimator with
    ``categorical_features`` left at its default also gets the item code as a category (the
    pooled model can then give each item its own surface), when there are at most 255 items.
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
        model = clone(self.estimator)
        params = model.get_params()
        if "random_state" in params:
            model.set_params(random_state=seed % 2 ** 32)  # scikit-learn takes 32 bits
        if categorical:  # the item code (last column): a category where the learner takes one
            items = np.concatenate([X[:, -1], X_test[:, -1]])
            if params.get("categorical_features", None) in ("from_dtype", None) and \
                    "categorical_features" in params and items.max(initial=0) < MAX_ITEM_CATEGORIES:
                model.set_params(categorical_features=[X.shape[1] - 1])
            else:  # an item code is no numeric feature; the GLM offset carries the item
                X, X_test = X[:, :-1], X_test[:, :-1]
        features = lambda A, eta: np.column_stack([A, eta])
        target = y.astype(np.int64) if family == "logistic" and hasattr(model, "predict_proba") else y
        if family == "logistic" and len(np.unique(target)) < 2:  # one class: nothing to learn
            return np.full(len(X_test), float(target[0]) if len(target) else 0.5), 0
        Z = features(X, offset)
        fit_kw = {}
        if _stops_on_given_rows(model) and validation.any() and (~validation).any() and \
                (family != "logistic" or len(np.unique(target[~validation])) == 2):
            model.set_params(early_stopping=True)
            fit_kw = dict(X_val=Z[validation], y_val=target[validation])
            Z, target = Z[~validation], target[~validation]
        model.fit(Z, target, **fit_kw)
        Z = features(X_test, offset_test)
        if family == "logistic" and hasattr(model, "predict_proba"):
            pred = model.predict_proba(Z)[:, list(model.classes_).index(1)]
        else:
            pred = model.predict(Z)
        n_iter = getattr(model, "n_iter_", None)  # None for closed-form solvers (Ridge)
        return np.asarray(pred, dtype=np.float64), 0 if n_iter is None else int(np.max(n_iter))


def _stops_on_given_rows(model) -> bool:
    """Whether ``model`` early-stops and its ``fit`` takes the validation rows (``X_val``)."""
    if model.get_params().get("early_stopping", False) is False:
        return False
    try:
        return "X_val" in inspect.signature(model.fit).parameters
    except (TypeError, ValueError):
        return False
