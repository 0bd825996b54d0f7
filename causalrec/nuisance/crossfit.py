"""Cross-fitted flexible nuisance models for all items: large items get learners of their
own, the tail shares a pooled learner, both on top of the segment GLM.

Per fold and nuisance (propensity e, outcome mu0 / mu1) the pooled segment GLM is fitted on
the training rows; its linear predictor is the offset of every flexible model, so the pooled
learner keeps the GLM's shrunk item-level structure and only learns what it misses. Items
with at least ``min_item_rows`` training rows for a nuisance also get a learner of their own;
an item keeps it only where its out-of-fold loss beats the pooled learner's on that item.
For the propensity a large item also gets an own learner from its base rate rather than the
offset (``own_free``), kept only where it wins clearly (``select.clear_winner``).
With ``auto``, each nuisance's final prediction is the convex combination of the GLM's and
the flexible out-of-fold predictions with the smallest out-of-fold loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..utils.hashing import _mix, content_column_order, row_hash
from .boosted import BoostedLearner
from .factorised import FactorisedLearner
from .foldfits import FoldFits, fits_joint_outcome, logit, standardised
from .select import (calibration_table, choose_model, choose_per_item, clear_winner, row_loss,
                     stack_weights)
from .sklearn_adapter import SklearnLearner, check_propensity_learner

__all__ = ["FlexibleNuisance", "NuisanceResult", "resolve_nuisance", "cross_fit_nuisances"]

NAMED = ("boosted", "factorised", "auto")
JOINT = ("joint", "joint_own")  # the joint outcome model's pooled and own predictions
OWN = ("own", "own_free", "joint_own")  # the candidates that are an item's own models


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
    joint_outcome : also fit the outcome on both arms at once, the arm a feature, on top of
        each arm's GLM offset (pooled, and own for large items): trees share the surface the
        arms have in common, which a model fitted on one arm's rows must extrapolate to the
        other arm's covariates. Per item and arm it competes out of fold with the rest.
    per_arm_outcome : with the joint outcome model, also fit each arm's outcome learners
        (pooled and own) as further candidates: True, False, or "auto" (default): only
        where some item has no joint model of its own (a tail). Where every item has one,
        the per-arm fits cost time for no accuracy (ACIC, 10 items of 4,802 rows: RMSE
        0.111 either way, 2.7 s against 1.6 s CPU); on a tail of small items they are cheap
        and help (IHDP-B, 20 items of 747 rows, unit=: 0.187 with, 0.197 without).
    n_jobs : threads fitting the per-item models at once (each booster has its own fixed
        thread count, so results do not depend on n_jobs).

    Cost: per fold, three offset GLMs; a pooled fit per model (propensity, joint outcome,
    and per arm with ``per_arm_outcome``) only where some item has no model of its own for
    it; one fit per large item and model. The per-item fits run ``n_jobs`` at a time.
    """

    def __init__(self, learner="boosted", *, auto=False, also=(), min_item_rows=1000,
                 item_feature=True, joint_outcome=True, per_arm_outcome="auto", n_jobs=1):
        self.learner = learner
        self.auto = auto
        self.also = also
        self.min_item_rows = min_item_rows
        self.item_feature = item_feature
        self.joint_outcome = joint_outcome
        self.per_arm_outcome = per_arm_outcome
        self.n_jobs = n_jobs

    def __repr__(self):
        return (f"FlexibleNuisance(learner={self.learner!r}, auto={self.auto}, "
                f"also={self.also!r}, min_item_rows={self.min_item_rows}, "
                f"joint_outcome={self.joint_outcome}, per_arm_outcome={self.per_arm_outcome!r}, "
                f"n_jobs={self.n_jobs})")

    def learners(self):
        """(propensity learner, outcome learner), checked."""
        if not (isinstance(self.min_item_rows, (int, np.integer)) and self.min_item_rows >= 2):
            raise ValueError(f"min_item_rows must be an integer >= 2, got {self.min_item_rows!r}")
        if self.per_arm_outcome not in (True, False, "auto"):
            raise ValueError(f"per_arm_outcome must be True, False or 'auto', got "
                             f"{self.per_arm_outcome!r}")
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
        (1 without ``auto``), the final loss, the number of items with a model of their own and
        ``offset_shared_penalty`` (the offset GLM's shared-slope penalty where it was chosen by
        out-of-fold loss: logs with few rows or units per column; else NaN) and
        ``offset_shrinkage`` (its deviations' ridge where chosen so; else NaN).
    items : per item, whether it kept a model of its own for e / mu0 / mu1.
    calibration : ``calibration_table`` of the final propensities.
    rounds : per nuisance, the boosting rounds of the pooled learner in each fold.
    glm_n_iter, glm_converged : most Newton steps of the offset GLMs, and whether all converged.
    held_out : with ``refit``, the variance's (e, mu0, mu1): on small items' rows the
        out-of-fold flexible parts on the all-rows offset GLMs' leave-one-out linear
        predictor (e, mu0, mu1 hold them on the all-rows one), out of fold elsewhere; else None.
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
    held_out: tuple | None = None


def cross_fit_nuisances(X, item, t, y, folds, *, n_items, family, spec: FlexibleNuisance,
                        glm=None, logged_e=None, seed=0, device="cpu", groups=None,
                        refit=False) -> NuisanceResult:
    """Cross-fitted (e, mu0, mu1) from flexible learners, for rows X (numpy, raw values) with
    item codes in [0, n_items), 0/1 treatment t, outcome y and folds (-> ``NuisanceResult``).

    ``family`` is the outcome's ("logistic" / "gaussian"); ``glm`` = keyword arguments of
    the pooled segment GLM (shrinkage, intercept_penalty, max_iter); ``logged_e`` replaces
    the propensity model; ``groups`` (uint64 unit hashes, ``causalrec.estimate.folds.unit_key``)
    keep each unit's rows on one side of the early-stopping split (else rows are split alone).
    ``refit`` (small logs, ``refit_small_logs``): on the rows of items too small for models of
    their own, each nuisance's offset GLM is refitted on every row and the final predictions
    moved by (all-rows minus out-of-fold linear predictor) on the link scale: the flexible
    part stays out of fold, the GLM part is the all-rows fit, as the pooled GLM's refit;
    ``held_out`` then holds the variance's: the same with the all-rows GLM's approximate
    leave-one-out linear predictor (the out-of-fold one, a GLM fitted on half the rows, made
    IHDP's intervals 1.4-1.7x the oracle's on surface A, covering 0.97-0.98; now 1.2-1.4x,
    0.95-0.96).
    Rows are processed in an order fixed by their content, so results do not depend on the
    callers' row order.
    """
    prop_learner, out_learner = spec.learners()
    n = len(item)
    # the columns in an order set by their content and the content key hashes X's values as
    # float32 whatever its dtype: the row order and the early-stopping rows (hence the
    # boosters) are then the same under float32 and float64 and whatever the roles' order
    columns = content_column_order(X)
    xhash = row_hash(pd.DataFrame(np.asarray(X, np.float32)[:, columns]))
    # an item enters the key, and the pooled booster as a category, by its rows' content, not
    # by its code (its label's place in the sorted labels): relabelling changes nothing
    item_key = np.zeros(n_items, np.uint64)
    np.add.at(item_key, item, _mix(xhash ^ _mix(np.asarray(t, np.uint64) + np.uint64(1)))
              ^ np.asarray(y, np.float32).view(np.uint32).astype(np.uint64))  # float32: as X
    item_code = np.argsort(np.argsort(item_key, kind="stable"), kind="stable")
    key = _mix(xhash ^ _mix(item_key[item] * np.uint64(2) + np.asarray(t, np.uint64))
               ^ np.uint64(seed))
    xkey = _mix(xhash ^ np.uint64(seed))
    order = np.lexsort((np.asarray(y, np.float64), key, item))
    X = X[np.ix_(order, columns)]  # one copy: rows in content order, columns too
    item, t, y, folds, key = item[order], t[order], y[order], folds[order], key[order]
    xkey = xkey[order]
    Xs = standardised(X, device)
    # early stopping holds out whole units when there are units: a unit's copies on both
    # sides would stop boosting late, on rows it has memorised
    if groups is not None:
        split_key = _mix(np.asarray(groups, np.uint64)[order]
                         ^ _mix(np.full(1, seed + 0x5EED, np.uint64)))
    else:  # covariate rows that recur across items (unit-like): their copies stay together
        split_key = xkey if recurring_rows(xkey, key) else key
    ctx = FoldFits(X, Xs, item, t, folds, n_items, split_key, spec, glm or {}, seed, device,
                   refit=refit, item_code=item_code)

    preds, rows, items, rounds = {}, [], {"item": np.arange(n_items)}, {}
    if logged_e is not None:
        preds["e"] = np.asarray(logged_e, np.float64)[order]
    also = spec.also_learners()
    also_e = [propensity_learner(learner) for learner in also]
    # the ``also`` learners serve the tail: where every item has a model of its own for a
    # nuisance they are not fitted (None; on ACIC's 10 large items the factorised one took
    # weight 0 in the stack for 80% of auto's time)
    everyone = np.ones(n, bool)
    tail = lambda rows, learner: len(ctx.big_items(rows, learner)) < n_items
    fits_joint = spec.joint_outcome and fits_joint_outcome(out_learner)
    if fits_joint and logged_e is None:
        ctx.share_matrices(prop_learner, out_learner)
    # beside the joint outcome model, per-arm learners as ``per_arm_outcome`` says
    per_arm = not fits_joint or spec.per_arm_outcome is True or (
        spec.per_arm_outcome == "auto" and tail(everyone, out_learner))
    arm_learner = out_learner if per_arm else None
    also_if = lambda learners, rows, learner: (learners if tail(rows, learner)
                                               else [None] * len(learners))
    jobs = [("e", t, everyone, "logistic", [prop_learner, *also_if(also_e, everyone, prop_learner)])
            ] * (logged_e is None) + [
        (f"mu{a}", y, t == a, family,
         [arm_learner, *also_if(also, everyone if fits_joint else t == a, out_learner)])
        for a in (0, 1)]
    fitted = {name: ctx.fit_one(target.astype(np.float64), arm, fam, learners, k,
                                arm_value=None if name == "e" else int(name[-1]),
                                free_own=name == "e")
              for k, (name, target, arm, fam, learners) in enumerate(jobs)}
    joint = ctx.fit_joint(y.astype(np.float64), family, out_learner, len(jobs)) \
        if fits_joint else None
    for name, target, arm, fam, learners in jobs:
        glm_pred, fits, free = fitted[name]
        scored = arm  # outcomes are observed only in their arm: score there
        loss = lambda p: row_loss(p[scored], target[scored], fam)
        loss_glm = loss(glm_pred)
        row = dict(nuisance=name, loss_glm=float(loss_glm.mean()))
        flexible = []
        for j, (pooled, own, learner_rounds, n_big) in enumerate(fits):
            if j == 0:  # the main learner: per item, the GLM, the pooled and the own models
                # (a per-item learner, factorised, is taken as it is: its propensity is
                # under-smoothed on purpose, which out-of-fold loss would undo)
                per_item_learner = not getattr(learners[0], "own_item_models", True)
                candidates = {} if per_item_learner else {"glm": glm_pred}
                candidates.update(pooled=pooled, own=own)
                if free is not None:  # the propensity's own models from the base rate
                    candidates["own_free"] = free
                if joint is not None and name != "e":
                    candidates.update(zip(JOINT, joint[int(name[-1])]))
                # models not fitted (the tail's pooled one where every item has its own,
                # per-arm ones beside the joint model) are no candidates
                candidates = {k: p for k, p in candidates.items()
                              if k == "glm" or np.isfinite(p).any()}
                losses = [np.where(np.isfinite(p[scored]), loss(np.nan_to_num(p, nan=0.5)),
                                   np.nan) for p in candidates.values()]
                chosen = choose_model(losses, item[scored], n_items)
                if "own_free" in candidates:  # kept only where it wins clearly
                    chosen = clear_winner(chosen, losses, item[scored], n_items,
                                          list(candidates).index("own_free"))
                stacked = np.stack(list(candidates.values()))
                flexible.append(stacked[chosen[item], np.arange(n)])
                names = np.array(list(candidates))[chosen]
                rounds[name] = learner_rounds
                items[f"model_{name}"] = names
                items[f"own_{name}"] = np.isin(names, OWN)
                row.update(loss_pooled=float(loss(pooled).mean()),
                           loss_flexible=float(loss(flexible[0]).mean()),
                           n_own_candidates=max(n_big, joint[3] if joint and name != "e" else 0),
                           n_own_items=int(items[f"own_{name}"].sum()),
                           items_by_model=", ".join(f"{m} {int((names == m).sum())}"
                                                    for m in candidates if (names == m).any()))
            elif learners[j] is None:  # not fitted (no tail)
                flexible.append(None)
                row[f"loss_{spec.also_names[j - 1]}"] = np.nan
            else:
                loss_own = np.where(np.isfinite(own[scored]), loss(np.nan_to_num(own, nan=0.5)),
                                    np.nan)
                use_own = choose_per_item(loss(pooled), loss_own, item[scored], n_items)
                flexible.append(np.where(use_own[item] | np.isnan(pooled), own, pooled))
                row[f"loss_{spec.also_names[j - 1]}"] = float(loss(flexible[j]).mean())
        stacked_j = [j for j, f in enumerate(flexible) if f is not None]
        weights = np.zeros(len(flexible))
        if spec.auto:
            weights[stacked_j], final_loss = stack_weights(
                glm_pred[scored], [flexible[j][scored] for j in stacked_j], target[scored], fam)
        else:
            weights[0], final_loss = 1.0, float(loss(flexible[0]).mean())
        preds[name] = (1 - weights.sum()) * glm_pred + sum(weights[j] * flexible[j]
                                                           for j in stacked_j)
        row.update(weight_flexible=float(weights[0]), loss_final=final_loss,
                   offset_shared_penalty=ctx.shared_penalties.get(name, np.nan),
                   offset_shrinkage=ctx.shrinkages.get(name, np.nan))
        row.update({f"weight_{also}": float(w) for also, w in zip(spec.also_names, weights[1:])})
        rows.append(row)
    if joint is not None:
        rounds["joint"] = joint[2]
    back = np.empty(n, dtype=np.int64)
    back[order] = np.arange(n)
    held_out = None
    if ctx.eta_gap:
        link = lambda name: "logistic" if name == "e" else family
        held_out = tuple((shifted(preds[name], ctx.loo_gap[name], link(name))
                          if name in ctx.loo_gap else preds[name])[back]
                         for name in ("e", "mu0", "mu1"))
        for name, gap in ctx.eta_gap.items():
            preds[name] = shifted(preds[name], gap, link(name))
    e, mu0, mu1 = (preds[name][back] for name in ("e", "mu0", "mu1"))
    return NuisanceResult(e, mu0, mu1, pd.DataFrame(rows), pd.DataFrame(items),
                          calibration_table(e, t[back]), rounds, max(ctx.glm_n_iter, default=0),
                          all(ctx.glm_converged), held_out)


def shifted(pred, gap, family):
    """Predictions moved by ``gap`` on the link scale (logit for "logistic")."""
    if family != "logistic":
        return pred + gap
    return 1 / (1 + np.exp(-(logit(pred, 1e-9) + gap)))


def recurring_rows(x_key, item_key, share=0.2) -> bool:
    """Whether the covariate rows look like units recurring across items: at most ``share``
    of the rows have distinct covariates (each recurs in 5 items or more on average), yet
    within an item they are nearly all distinct (a unit appears once per item; a few
    covariate cells would repeat within items too). (The simulator's logs, users with a
    row-level hour, have 42% distinct rows: the early-stopping rows stay as they were.)
    Then early stopping holds out all copies of a covariate row together, as ``unit=``
    would: a booster stopped on copies of its training rows memorises them (issue 28)."""
    n = len(x_key)
    return n > 0 and len(np.unique(x_key)) <= share * n and len(np.unique(item_key)) >= 0.9 * n
