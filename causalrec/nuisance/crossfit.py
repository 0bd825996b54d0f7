"""Cross-fitted flexible nuisance models for all items: large items get learners of their
own, the tail shares a pooled learner, both on top of the segment GLM.

Per fold and nuisance (propensity e, outcome mu0 / mu1) the pooled segment GLM is fitted on
the training rows; its linear predictor is the offset of every flexible model, so the pooled
learner keeps the GLM's shrunk item-level structure and only learns what it misses. Items
with at least ``min_item_rows`` training rows for a nuisance also get a learner of their own;
an item keeps it only where its out-of-fold loss beats the pooled learner's on that item.
With ``auto``, each nuisance's final prediction is the convex combination of the GLM's and
the flexible out-of-fold predictions with the smallest out-of-fold loss.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..glm import SegmentGLM
from ..utils.hashing import _mix, row_hash
from .boosted import BoostedLearner
from .factorised import FactorisedLearner
from .select import calibration_table, choose_per_item, row_loss, stack_weights
from .sklearn_adapter import SklearnLearner, check_propensity_learner

__all__ = ["FlexibleNuisance", "NuisanceResult", "resolve_nuisance", "cross_fit_nuisances"]

NAMED = ("boosted", "factorised", "auto")


class FlexibleNuisance:
    """A flexible nuisance specification for ``ItemEffectEstimator(nuisance=...)``.

    Parameters
    ----------
    learner : "boosted" (default: ``BoostedLearner()``), a ``BoostedLearner``, any
        scikit-learn estimator (used for all three models; a classifier's ``predict_proba``
        for the propensity), or a pair ``(propensity, outcome)`` of those.
    auto : stack each nuisance's GLM and flexible predictions by out-of-fold loss.
    also : further learners ("boosted", "factorised" or learner objects, used for all three
        models) whose out-of-fold predictions join the stack (with ``auto``): the convex
        combination of the GLM, ``learner`` and these with the smallest out-of-fold loss.
    min_item_rows : items with at least this many training rows for a model (in every
        fold) also get a model of their own, kept only where it wins out of fold. (Smaller
        own boosters were never kept on the non-linear simulator, where the pooled booster
        splits on the item, and tripled the time.)
    item_feature : the pooled booster also splits on the item (a categorical feature).
    n_jobs : threads fitting the per-item models at once (each booster has its own fixed
        thread count, so results do not depend on n_jobs).

    Cost: per fold, three pooled fits plus one per large item and model; the per-item fits
    run ``n_jobs`` at a time.
    """

    def __init__(self, learner="boosted", *, auto=False, also=(), min_item_rows=1000,
                 item_feature=True, n_jobs=1):
        self.learner = learner
        self.auto = auto
        self.also = also
        self.min_item_rows = min_item_rows
        self.item_feature = item_feature
        self.n_jobs = n_jobs

    def __repr__(self):
        return (f"FlexibleNuisance(learner={self.learner!r}, auto={self.auto}, "
                f"also={self.also!r}, min_item_rows={self.min_item_rows}, n_jobs={self.n_jobs})")

    def learners(self):
        """(propensity learner, outcome learner), checked."""
        if not (isinstance(self.min_item_rows, (int, np.integer)) and self.min_item_rows >= 2):
            raise ValueError(f"min_item_rows must be an integer >= 2, got {self.min_item_rows!r}")
        if not (isinstance(self.n_jobs, (int, np.integer)) and self.n_jobs >= 1):
            raise ValueError(f"n_jobs must be a positive integer, got {self.n_jobs!r}")
        pair = self.learner if isinstance(self.learner, (tuple, list)) else (self.learner,) * 2
        if len(pair) != 2:
            raise ValueError(f"nuisance: a pair (propensity, outcome) has 2 models, got {len(pair)}")
        out = tuple(_as_learner(model, role) for model, role in zip(pair, ("propensity", "outcome")))
        for learner in out:
            learner.check()
        return propensity_learner(out[0]), out[1]

    def _also(self) -> list:
        return list(self.also) if isinstance(self.also, (tuple, list)) else [self.also]

    def also_learners(self) -> list:
        """The ``also`` learners, checked (they need ``auto``: nothing else combines them)."""
        also = self._also()
        if also and not self.auto:
            raise ValueError("also: further learners need auto=True (the stack combines them)")
        out = [_as_learner(model, "outcome") for model in also]
        for learner in out:
            learner.check()
        return out

    @property
    def also_names(self) -> list[str]:
        return [m if isinstance(m, str) else type(m).__name__.removesuffix("Learner").lower()
                for m in self._also()]


def propensity_learner(learner):
    """A learner's settings for the propensity model (a factorised learner under-smooths
    there, ``FactorisedLearner.propensity_penalty``); others unchanged."""
    return learner.for_propensity() if hasattr(learner, "for_propensity") else learner


def _as_learner(model, role):
    if isinstance(model, str) and model in ("boosted", "factorised"):
        return BoostedLearner() if model == "boosted" else FactorisedLearner()
    if isinstance(model, (BoostedLearner, FactorisedLearner, SklearnLearner)):
        return model
    if role == "propensity" and hasattr(model, "fit"):
        check_propensity_learner(model)
    return SklearnLearner(model)


def resolve_nuisance(value):
    """The ``FlexibleNuisance`` an estimator's ``nuisance`` value stands for (None for the
    GLM choices "pooled" / "per_item")."""
    if isinstance(value, str):
        if value in ("pooled", "per_item"):
            return None
        if value == "factorised":
            return FlexibleNuisance(learner="factorised")
        if value == "boosted":
            return FlexibleNuisance()
        if value == "auto":  # the stack of the GLM, the boosted and the factorised models
            return FlexibleNuisance(auto=True, also=("factorised",))
        raise ValueError(f"nuisance must be 'pooled', 'per_item', 'boosted', 'factorised', "
                         f"'auto', a "
                         f"FlexibleNuisance, a scikit-learn estimator or a (propensity, "
                         f"outcome) pair, got {value!r}")
    if isinstance(value, FlexibleNuisance):
        return value
    return FlexibleNuisance(learner=value)


@dataclass
class NuisanceResult:
    """Out-of-fold predictions (numpy, in the caller's row order) and diagnostics.

    models : per nuisance, out-of-fold losses of the GLM, the pooled learner and the flexible
        prediction (pooled + own where chosen), the stacking weight on the flexible one
        (1 without ``auto``), the final loss and the number of items with a model of their own.
    items : per item, whether it kept a model of its own for e / mu0 / mu1.
    calibration : ``calibration_table`` of the final propensities.
    rounds : per nuisance, the boosting rounds of the pooled learner in each fold.
    glm_n_iter, glm_converged : most Newton steps of the offset GLMs, and whether all converged.
    """

    e: np.ndarray
    mu0: np.ndarray
    mu1: np.ndarray
    models: pd.DataFrame
    items: pd.DataFrame
    calibration: pd.DataFrame
    rounds: dict = field(default_factory=dict)
    glm_n_iter: int = 0
    glm_converged: bool = True


def cross_fit_nuisances(X, item, t, y, folds, *, n_items, family, spec: FlexibleNuisance,
                        glm=None, logged_e=None, seed=0, device="cpu", groups=None) -> NuisanceResult:
    """Cross-fitted (e, mu0, mu1) from flexible learners, for rows X (numpy, raw values) with
    item codes in [0, n_items), 0/1 treatment t, outcome y and folds (-> ``NuisanceResult``).

    ``family`` is the outcome's ("logistic" / "gaussian"); ``glm`` = keyword arguments of
    the pooled segment GLM (shrinkage, intercept_penalty, max_iter); ``logged_e`` replaces
    the propensity model; ``groups`` (uint64 unit hashes, ``causalrec.estimate.folds.unit_key``)
    keep each unit's rows on one side of the early-stopping split (else rows are split alone).
    Rows are processed in an order fixed by their content, so results do not depend on the
    callers' row order.
    """
    prop_learner, out_learner = spec.learners()
    n = len(item)
    # the content key hashes X's values as float32 whatever its dtype: the row order and the
    # early-stopping rows (hence the boosters) are then the same under float32 and float64
    key = _mix(row_hash(pd.DataFrame(np.asarray(X, np.float32)))
               ^ _mix(np.asarray(item, np.uint64) * np.uint64(2) + np.asarray(t, np.uint64))
               ^ np.uint64(seed))
    order = np.lexsort((np.asarray(y, np.float64), key, item))
    X, item, t, y, folds, key = X[order], item[order], t[order], y[order], folds[order], key[order]
    Xs = _standardised(X, device)
    # early stopping holds out whole units when there are units: a unit's copies on both
    # sides would stop boosting late, on rows it has memorised
    split_key = key if groups is None else _mix(np.asarray(groups, np.uint64)[order]
                                                ^ _mix(np.full(1, seed + 0x5EED, np.uint64)))
    ctx = _Context(X, Xs, item, folds, n_items, split_key, spec, glm or {}, seed, device)

    preds, rows, items, rounds = {}, [], {"item": np.arange(n_items)}, {}
    if logged_e is not None:
        preds["e"] = np.asarray(logged_e, np.float64)[order]
    also = spec.also_learners()
    also_e = [propensity_learner(learner) for learner in also]
    jobs = [("e", t, np.ones(n, bool), "logistic", [prop_learner, *also_e])] * (logged_e is None) + [
        (f"mu{a}", y, t == a, family, [out_learner, *also]) for a in (0, 1)]
    for name, target, arm, fam, learners in jobs:
        glm_pred, fits = ctx.fit_one(target.astype(np.float64), arm, fam, learners, len(rows))
        scored = arm  # outcomes are observed only in their arm: score there
        loss = lambda p: row_loss(p[scored], target[scored], fam)
        row = dict(nuisance=name, loss_glm=float(loss(glm_pred).mean()))
        flexible = []
        for j, (pooled, own, learner_rounds, n_big) in enumerate(fits):
            loss_own = np.where(np.isfinite(own[scored]), loss(np.nan_to_num(own, nan=0.5)),
                                np.nan)
            use_own = choose_per_item(loss(pooled), loss_own, item[scored], n_items)
            flexible.append(np.where(use_own[item], own, pooled))
            if j == 0:  # the main learner: its diagnostics keep their names
                rounds[name] = learner_rounds
                items[f"own_{name}"] = use_own
                row.update(loss_pooled=float(loss(pooled).mean()),
                           loss_flexible=float(loss(flexible[0]).mean()),
                           n_own_candidates=n_big, n_own_items=int(use_own.sum()))
            else:
                row[f"loss_{spec.also_names[j - 1]}"] = float(loss(flexible[j]).mean())
        if spec.auto:
            weights, final_loss = stack_weights(glm_pred[scored], [f[scored] for f in flexible],
                                                target[scored], fam)
        else:
            weights, final_loss = np.ones(1), float(loss(flexible[0]).mean())
        preds[name] = (1 - weights.sum()) * glm_pred + sum(w * f for w, f in zip(weights, flexible))
        row.update(weight_flexible=float(weights[0]), loss_final=final_loss)
        row.update({f"weight_{also}": float(w) for also, w in zip(spec.also_names, weights[1:])})
        rows.append(row)
    back = np.empty(n, dtype=np.int64)
    back[order] = np.arange(n)
    e, mu0, mu1 = (preds[name][back] for name in ("e", "mu0", "mu1"))
    return NuisanceResult(e, mu0, mu1, pd.DataFrame(rows), pd.DataFrame(items),
                          calibration_table(e, t[back]), rounds, max(ctx.glm_n_iter, default=0),
                          all(ctx.glm_converged))


def _standardised(X, device, chunk=65_536):
    """Standardised columns for the GLM. Moments of the content-ordered rows, summed in
    float64 over row chunks (no float64 copy of X): the design's own moments are summed in
    the caller's row order, which would make results depend on it at float32 rounding."""
    Xt = torch.as_tensor(np.ascontiguousarray(X))
    n, d = Xt.shape
    if d == 0 or n == 0:
        return Xt.to(device)
    chunks = [Xt[a:a + chunk].to(torch.float64) for a in range(0, n, chunk)]
    center = sum(c.sum(0) for c in chunks) / n
    std = (sum(((c - center) ** 2).sum(0) for c in chunks) / n).sqrt()
    scale = torch.where(std > 0, 1.0 / std, 1.0)
    Xt = Xt.to(device)
    return (Xt - center.to(Xt)) * scale.to(Xt)


class _Context:
    """The data of one cross-fit and the fits of one nuisance over the folds."""

    def __init__(self, X, Xs, item, folds, n_items, key, spec, glm, seed, device):
        self.X, self.Xs, self.item, self.folds = X, Xs, item, folds
        self.n_items, self.key, self.spec, self.glm = n_items, key, spec, glm
        self.seed, self.device = seed, device
        self.n_folds = int(folds.max()) + 1 if len(folds) else 1
        self.Xp = (np.column_stack([X, item.astype(X.dtype)]) if spec.item_feature else X)
        self.glm_n_iter, self.glm_converged = [], []

    def glm_eta(self, target, train, family):
        """Linear predictor of the pooled segment GLM fitted on ``train`` rows, for all rows."""
        glm = SegmentGLM(family=family, pooled=True, tol=1e-7, device=self.Xs.device,
                         dtype=self.Xs.dtype, **self.glm)
        glm.fit(self.Xs[torch.as_tensor(np.flatnonzero(train), device=self.Xs.device)],
                target[train], self.item[train], n_segments=self.n_items)
        self.glm_n_iter.append(glm.n_iter_)
        self.glm_converged.append(bool(glm.converged_.all()))
        return glm.decision_function(self.Xs, self.item).astype(np.float64)

    def fit_one(self, target, arm, family, learners, index):
        """Out-of-fold GLM predictions and, per learner, its out-of-fold pooled and own (NaN
        where none) predictions, the boosting rounds of its pooled fits and the number of
        items with models of their own. The GLM offset is fitted once per fold for all."""
        n = len(target)
        glm_pred = np.full(n, np.nan)
        fits = [(np.full(n, np.nan), np.full(n, np.nan), [], 0) for _ in learners]
        # items with enough training rows in every fold get models of their own
        smallest = np.full(self.n_items, np.iinfo(np.int64).max)
        for f in range(self.n_folds):
            train = arm & (self.folds != f if self.n_folds > 1 else True)
            smallest = np.minimum(smallest, np.bincount(self.item[train], minlength=self.n_items))
        for f in range(self.n_folds):
            test = self.folds == f if self.n_folds > 1 else np.ones(n, bool)
            train = arm & (~test if self.n_folds > 1 else test)
            eta = self.glm_eta(target, train, family)
            glm_pred[test] = 1 / (1 + np.exp(-eta[test])) if family == "logistic" else eta[test]
            for j, learner in enumerate(learners):
                big = np.flatnonzero(smallest >= self.spec.min_item_rows)
                if not getattr(learner, "own_item_models", True):  # per-item already
                    big = big[:0]
                pooled, own, rounds, _ = fits[j]
                rounds.append(self._fit_fold(learner, target, family, train, test, eta, big,
                                             pooled, own, self.seed * 1000 + 10 * index + f + 97 * j))
                fits[j] = (pooled, own, rounds, len(big))
        return glm_pred, fits

    def _fit_fold(self, learner, target, family, train, test, eta, big, pooled, own, seed):
        """One fold of one learner: fills ``pooled`` and ``own`` on the test rows, returns the
        pooled fit's rounds."""
        # early-stopping rows: a share of the training rows chosen by content (row-order free)
        share = getattr(learner, "validation_share", 0.2)
        validation = (self.key % np.uint64(10_000)).astype(np.int64) < int(share * 10_000)
        tr = np.flatnonzero(train)
        pooled[test], r = learner.fit_predict(
            self.Xp[tr], target[tr], eta[tr], self.Xp[test], eta[test], family=family,
            validation=validation[tr], seed=seed, categorical=self.spec.item_feature)
        # rows are sorted by item: each big item's rows are one slice of tr / test_idx
        test_idx = np.flatnonzero(test)
        starts_tr, ends_tr = (np.searchsorted(self.item[tr], big, side=s)
                              for s in ("left", "right"))
        starts_te, ends_te = (np.searchsorted(self.item[test_idx], big, side=s)
                              for s in ("left", "right"))

        def fit_item(j):
            a, b = tr[starts_tr[j]:ends_tr[j]], test_idx[starts_te[j]:ends_te[j]]
            if len(b) == 0:
                return b, np.zeros(0), 0
            pred, _ = learner.fit_predict(self.X[a], target[a], eta[a], self.X[b], eta[b],
                                          family=family, validation=validation[a],
                                          seed=seed + 7919 * int(big[j]) + 1)
            return b, pred, 0

        with ThreadPoolExecutor(max_workers=self.spec.n_jobs) as pool:
            for b, pred, _ in pool.map(fit_item, range(len(big))):
                own[b] = pred
        return r
