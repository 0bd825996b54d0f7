"""Factorised (low-rank) item slopes: items share a few taste directions.

In a recommender the confounding that matters is a match between user and item (profile
topic x item topic): every item has its own slopes on the user's text components, but a tail
item has too few rows to learn a slope per component. ``FactorisedLearner`` adds, on top of
the pooled segment GLM's linear predictor ``eta`` (item intercepts and shrunk slopes),

    b_k + v_k' W' x        (row x of item k),

with ``W`` (d x r) a projection of the user-level confounders shared by all items and
``v_k`` an item's r factors: r numbers per item instead of d. Where the log has item-level
columns (e.g. item-text components, constant within an item), ``v_k = g + A c_k + u_k``:
shared factors, factors predicted from the item's columns ``c_k`` (so even an item with few
rows gets its match from its description) and its own part ``u_k``, shrunk toward zero.

``base="own"`` replaces ``eta`` by the learner's own slopes, ``x' (beta + delta_k)``: a
factor-analytic prior on the item slopes, Cov(slopes) = W T W' + sigma_x^2 I (the factors
carry the shared directions, the deviations ``delta_k``, ridge 1 / sigma_x^2, the rest), so
that the factors of large and small items mean the same thing (on top of ``eta`` a large
item's direction is mostly in the GLM's own slopes). ``factor_prior="atoms"`` replaces the
Gaussian prior on ``u_k`` by a discrete one on the well-measured items' factors
(``factor_prior.atom_posterior``). Both are options, not defaults: measured in
benchmarks/README.md (lower RMSE on the BERT-text logs, less bias removed on others).

Fit (all on the batched engine, ``causalrec.glm.SegmentGLM``): W starts from the leading
right singular vectors of the size-weighted matrix of per-item slope deviations (one pooled
GLM without offset, which also gives the moment estimates of the prior variances); then,
``n_alternations`` times, a factor step (one pooled GLM on ``z = W'x`` and ``z (x) c_k``
(and x with ``base="own"``), segment = item, offset = eta: per-item ``u_k``, shared ``g``
and ``A``) and a projection step (one GLM on the d*r features ``x (x) v_k``, offset = the
rest); a last factor step matches the factors to the final W (then the atoms posterior, if
chosen). Each step is a convex penalised GLM (Newton steps); after each projection step the
factors are whitened (``z`` with unit covariance), so the penalty on ``u_k`` has a fixed
meaning.

After the cross-fit the estimator calibrates each item's propensity so that its arms
balance along the text components (``ItemEffectEstimator(balance_penalty=...)``,
``causalrec.nuisance.balance``): the factors of a tail item are shrunk toward zero, and
the remainder they leave lies along those columns.

Cost per nuisance and fold: 2 + 2 * n_alternations GLM fits, the projection step on
n x d*r features (memory n * d * r values of X's dtype).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..glm import SegmentGLM
from .factor_prior import (PENALTY_RANGE, atom_posterior, item_curvature, moment_penalties,
                           refit_intercepts)

__all__ = ["FactorisedLearner"]

PENALTY_RULES = ("auto", "remainder")
_LEVEL_TOL = 1e-9  # within-item share of a column's variance below which it is item-level


def _logistic_weight(eta):
    p = 1.0 / (1.0 + np.exp(-eta))
    return p * (1.0 - p)


@dataclass(frozen=True)
class FactorisedLearner:
    """Settings of the factorised nuisance models.

    Parameters
    ----------
    rank : r, the number of shared taste directions (capped at the number of user-level
        columns and of items with training rows, so any number of items >= 1 works).
    factor_penalty : ridge on each item's own factors ``u_k`` in the outcome models (and,
        with ``base="offset"``, on the shared ``g`` and ``A``) (whitened ``z``, so a
        N(0, 1 / factor_penalty) prior per direction on the linear-predictor scale), or
        "auto" (default): empirical Bayes, 1 / (the factors' variance across items, by
        the method of moments from the larger items), or
        "remainder" (see ``propensity_penalty``). With the atoms prior it sets which items
        are atoms (noise variance at most 1 / factor_penalty). It is not chosen by held-out
        loss: the offset GLM has seen held-out training rows, and the out-of-fold loss of
        the crossfit favours the GLM even where the factors remove bias (measured,
        benchmarks/README.md).
    propensity_penalty : the same ridge in the propensity model: None (default: as
        ``factor_penalty``), "auto", "remainder" or a positive number. "remainder" is the
        empirical-Bayes penalty divided by (rank + 2) (at least the lower end of
        ``PENALTY_RANGE``): it minimises the expected square of an item's AIPW remainder
        (propensity error x outcome error) when the outcome models' errors lie along the
        item's propensity factors (a match raises exposure and clicks alike), where "auto"
        minimises the propensity's own error. With the balancing step it removes a little
        more of the long tail's bias (0.887 -> 0.901 of the naive bias) at +5% RMSE, and
        ~13% fewer items keep status "ok" (low effective sample sizes): an option, not the
        default (benchmarks/README.md, session 7).
    projection_penalty : ridge on the shared projection W (fitted on all rows: it only keeps
        directions without signal at zero).
    init_shrinkage : shrinkage of the per-item slopes whose SVD starts W (small: the large
        items' slopes should be nearly free, the small items' are shrunk to zero anyway).
    n_alternations : factor / projection step pairs.
    item_features : use item-level columns (constant within every item) to predict the
        factors (``A c_k``); "auto" uses them when there are any.
    factor_prior : "gaussian" (default: the ridge ``factor_penalty`` alone) or "atoms"
        (posterior means under a discrete prior on the well-measured items' factors,
        weights by EM; use with ``base="own"``: on top of the GLM the large items'
        factors are ~0 and make poor atoms).
    base : "offset" (default: factors on top of the crossfit's pooled GLM) or "own" (the
        learner fits the items' slopes itself, factors plus shrunk deviations; the
        crossfit's offset is then unused).
    max_iter : most Newton steps per GLM fit.
    """

    rank: int = 6
    factor_penalty: object = "auto"
    propensity_penalty: object = None
    projection_penalty: float = 1.0
    init_shrinkage: float = 1.0
    n_alternations: int = 3
    item_features: object = "auto"
    factor_prior: str = "gaussian"
    base: str = "offset"
    max_iter: int = 30

    #: the factors are per item already: no separate per-item learners (see crossfit)
    own_item_models = False

    def check(self) -> None:
        for name in ("rank", "n_alternations", "max_iter"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                    and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        penalties = {"factor_penalty": self.factor_penalty}
        if self.propensity_penalty is not None:  # None: as factor_penalty
            penalties["propensity_penalty"] = self.propensity_penalty
        for name, value in penalties.items():
            if isinstance(value, str) and value not in PENALTY_RULES:
                raise ValueError(f"{name} must be one of {PENALTY_RULES} or a positive "
                                 f"number, got {value!r}")
        names = ("projection_penalty", "init_shrinkage") + tuple(
            name for name, value in penalties.items() if not isinstance(value, str))
        for name in names:
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value)
                    and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name, allowed in (("factor_prior", ("atoms", "gaussian")),
                              ("base", ("own", "offset"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        if self.item_features not in ("auto", True, False):
            raise ValueError(f"item_features must be 'auto', True or False, "
                             f"got {self.item_features!r}")

    def for_propensity(self) -> "FactorisedLearner":
        """The settings used for the propensity model (its ``propensity_penalty``)."""
        if self.propensity_penalty is None:
            return self
        return replace(self, factor_penalty=self.propensity_penalty)

    def fit_predict(self, X, y, offset, X_test, offset_test, *, family, validation, seed,
                    categorical=False):
        """Fit on (X, y) with ``offset`` and return (mean predictions on X_test, steps).

        The last column of X must be the item code (``categorical``: the crossfit's
        ``item_feature=True``). ``validation`` and ``seed`` are unused: every step is a
        deterministic penalised fit.
        """
        if not categorical:
            raise ValueError("the factorised learner needs the item column: "
                             "FlexibleNuisance(item_feature=True)")
        item, item_test = (np.asarray(A[:, -1], np.int64) for A in (X, X_test))
        n_items = int(max(item.max(initial=-1), item_test.max(initial=-1))) + 1
        X, X_test = np.asarray(X[:, :-1], np.float64), np.asarray(X_test[:, :-1], np.float64)
        user, item_cols = _column_levels(np.vstack([X, X_test]), np.concatenate([item, item_test]),
                                         n_items)
        center, scale = X.mean(0), X.std(0)
        scale = np.where(scale > 0, scale, 1.0)
        Xs, Xs_test = ((A - center) / scale for A in (X, X_test))
        C = _item_matrix(np.vstack([Xs, Xs_test])[:, item_cols],
                         np.concatenate([item, item_test]), n_items)
        if self.item_features is False or C.shape[1] == 0:
            C = np.zeros((n_items, 0))
        elif self.item_features is True and C.shape[1] == 0:
            raise ValueError("item_features=True, but no column is constant within every item")
        model = _Factorised(self, family, Xs[:, user], item, y.astype(np.float64),
                            np.asarray(offset, np.float64), C, n_items)
        model.fit()
        eta = model.linear_predictor(Xs_test[:, user], item_test,
                                     np.asarray(offset_test, np.float64))
        mean = 1.0 / (1.0 + np.exp(-eta)) if family == "logistic" else eta
        return mean, model.n_steps


def _column_levels(X, item, n_items):
    """(user-level column indices, item-level column indices): item-level columns have no
    variance within items (constant columns are neither)."""
    total = ((X - X.mean(0)) ** 2).sum(0)
    means = _item_matrix(X, item, n_items)
    within = ((X - means[item]) ** 2).sum(0)
    varies = total > 0
    item_level = varies & (within <= _LEVEL_TOL * total)
    return np.flatnonzero(varies & ~item_level), np.flatnonzero(item_level)


def _item_matrix(values, item, n_items):
    """Per-item means of the columns of ``values`` (n_items, columns)."""
    count = np.maximum(np.bincount(item, minlength=n_items), 1)
    sums = [np.bincount(item, weights=values[:, j], minlength=n_items)
            for j in range(values.shape[1])]
    return (np.stack(sums, 1) if sums else np.zeros((n_items, 0))) / count[:, None]


class _Factorised:
    """One factorised fit: state (W, factors, intercepts) and the alternating steps."""

    def __init__(self, settings, family, X, item, y, offset, C, n_items):
        self.s, self.family = settings, family
        self.X, self.item, self.y, self.offset, self.C = X, item, y, offset, C
        self.n_items, self.n_steps = n_items, 0
        # squared-error loss is not scaled by the noise variance: put the priors on its scale
        self.unit = 1.0 if family == "logistic" else float(np.var(y - offset)) or 1.0
        # at most one direction per column and per item with rows: W starts from the
        # (items x d) matrix of slope deviations, which has no more directions than that
        self.rank = min(settings.rank, X.shape[1], int(np.count_nonzero(np.bincount(item))))
        self.own = settings.base == "own"
        if self.own:  # the offset becomes the items' own slopes x'(beta + delta_k)
            self.offset = np.zeros(len(y))

    def glm(self, pooled, penalty, **kw):
        return SegmentGLM(family=self.family, pooled=pooled, penalty=penalty * self.unit,
                          shrinkage=penalty * self.unit, intercept_penalty=1e-3 * self.unit,
                          max_iter=self.s.max_iter, tol=1e-6, dtype="float64", **kw)

    def fit(self):
        if self.rank == 0:  # no user-level column: nothing to factorise
            self.W = np.zeros((self.X.shape[1], 0))
            self.b, self.V = np.zeros(self.n_items), np.zeros((self.n_items, 0))
            return
        self.W = self._whiten(self._initial_projection())
        penalty, self.slope_penalty = moment_penalties(self._deviations, self._info, self.X,
                                                       self.W, self.unit)
        rule = self.s.factor_penalty
        self.penalty = (penalty if rule == "auto" else
                        max(penalty / (self.rank + 2), PENALTY_RANGE[0]) if rule == "remainder"
                        else float(rule))
        self._factor_step()
        for _ in range(self.s.n_alternations):
            self._projection_step()
            self._factor_step()
        if self.s.factor_prior == "atoms":
            self._atom_step()

    def _factor_glm(self, penalty):
        shared = tuple(range(self.rank, self.rank * (1 + self.C.shape[1])))  # A: no deviations
        # on top of the offset GLM, whose shared slopes already carry the mean direction, g
        # and A get the factors' prior too: nearly unpenalised, g undid the offset's tuned
        # shared-slope ridge on small logs (IHDP, one item of 747 rows per call: RMSE 0.192
        # -> 0.130; the simulator's text logs: bias removed 0.947 / 0.948, unchanged)
        prior = {} if self.own else dict(shared_penalty=penalty * self.unit)
        return self.glm(True, penalty, shared_columns=shared, **prior)

    def _initial_projection(self):
        """Leading right singular vectors of the per-item slope deviations, rows weighted by
        sqrt(rows of the item) (their precision), with a fixed sign (reproducible)."""
        glm = self.glm(True, self.s.init_shrinkage).fit(self.X, self.y, self.item,
                                                        n_segments=self.n_items)
        self.n_steps += glm.n_iter_
        self._deviations = glm.coef_[:, 1:] - glm.shared_coef_[1:]
        eta = glm.decision_function(self.X, self.item)
        self._info = (np.bincount(self.item, minlength=self.n_items) if self.family != "logistic"
                      else np.bincount(self.item, weights=_logistic_weight(eta),
                                       minlength=self.n_items))
        D = self._deviations * np.sqrt(np.bincount(self.item, minlength=self.n_items))[:, None]
        _, _, vt = np.linalg.svd(D, full_matrices=False)
        vt = vt[:self.rank]
        vt = vt * np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])[:, None]
        return vt.T

    def _whiten(self, W):
        """W with unit-covariance scores z = X W (the factors absorb the inverse map)."""
        Z = self.X @ W
        cov = np.cov(Z, rowvar=False).reshape(W.shape[1], W.shape[1])
        vals, vecs = np.linalg.eigh(cov + 1e-10 * np.eye(len(cov)))
        return W @ (vecs / np.sqrt(np.clip(vals, 1e-10, None)))  # z R: identity covariance

    def _factor_features(self, Z, item):
        """[z, z (x) c_item]: item factors g + u_k on z, and A c_k (shared) on the products."""
        if self.C.shape[1] == 0:
            return Z
        Cr = self.C[item]
        return np.hstack([Z, (Z[:, :, None] * Cr[:, None, :]).reshape(len(Z), -1)])

    def _factor_step(self):
        Z = self.X @ self.W
        F = self._factor_features(Z, self.item)
        n_a = self.rank * self.C.shape[1]
        if self.own:  # + x with per-item deviations, ridge slope_penalty via the column scale
            scale = np.sqrt(self.penalty / self.slope_penalty)
            glm = self._factor_glm(self.penalty).fit(np.hstack([F, self.X * scale]), self.y,
                                                     self.item, n_segments=self.n_items)
            self.slopes = glm.coef_[:, 1 + self.rank + n_a:] * scale  # beta + delta_k
            self.offset = (self.X * self.slopes[self.item]).sum(1)
        else:
            glm = self._factor_glm(self.penalty).fit(F, self.y, self.item, offset=self.offset,
                                                     n_segments=self.n_items)
        self.n_steps += glm.n_iter_
        coef = glm.coef_
        self.b = coef[:, 0]
        A = glm.shared_coef_[1 + self.rank:1 + self.rank + n_a].reshape(self.rank, -1)
        self.prior_mean = glm.shared_coef_[1:1 + self.rank] + self.C @ A.T  # g + A c_k
        self.V = coef[:, 1:1 + self.rank] + self.C @ A.T  # v_k = g + u_k + A c_k

    def _atom_step(self):
        """Factors -> posterior means under the atoms prior; intercepts refitted."""
        Z = self.X @ self.W
        eta = self.offset + self.b[self.item] + (Z * self.V[self.item]).sum(1)
        score, H = item_curvature(Z, self.y, eta, self.item, self.n_items, self.family,
                                  self.unit)
        V = atom_posterior(self.V, self.prior_mean, score, H, self.penalty)
        if V is None:
            return
        trained = np.bincount(self.item, minlength=self.n_items) > 0
        self.V = np.where(trained[:, None], V, self.V)
        self.b = refit_intercepts(self.b, self.offset + (Z * self.V[self.item]).sum(1),
                                  self.y, self.item, self.n_items, self.family)

    def _projection_step(self):
        """One GLM on x (x) v_item (d*r features) with offset eta + b: the new W."""
        d = self.X.shape[1]
        Vr = self.V[self.item]
        F = (self.X[:, :, None] * Vr[:, None, :]).reshape(len(self.X), d * self.rank)
        glm = self.glm(False, self.s.projection_penalty).fit(
            F, self.y, np.zeros(len(F), np.int64), offset=self.offset + self.b[self.item],
            n_segments=1)
        self.n_steps += glm.n_iter_
        W = glm.coef_[0, 1:].reshape(d, self.rank)
        if not np.abs(W).sum() > 0:  # no signal left: keep the current directions
            return
        self.W = self._whiten(W)

    def linear_predictor(self, X, item, offset):
        if self.rank == 0:
            return offset.copy()
        Z = X @ self.W
        known = item < len(self.b)
        out = offset.copy()
        if self.own:  # the items' own slopes replace the crossfit's offset
            out[:] = 0.0
            out[known] = (X[known] * self.slopes[item[known]]).sum(1)
        out[known] += self.b[item[known]] + (Z[known] * self.V[item[known]]).sum(1)
        return out
