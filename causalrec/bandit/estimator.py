"""Off-policy estimates from bandit logs: which item was shown, the outcome, and the logged
probability of showing it.

Treatment is multi-valued (which item, in which position). For every item ``a`` the value
``V(a)`` is the expected outcome had ``a`` been shown, averaged over the logged contexts and
positions; a policy's value is the expected outcome had it chosen the items. All estimators
are means of per-row influence values ``psi``, so one formula gives the estimate and its
standard error:

* ``ipw``   psi = 1{a_i = a} y_i / p_i                          (Horvitz-Thompson)
* ``snipw`` psi = V + n 1{a_i = a} (y_i - V) / (p_i S),  S = sum 1{a_i = a} / p_i
* ``dr``    psi = q(x_i, a) + 1{a_i = a} (y_i - q(x_i, a_i)) / p_i
* ``dm``    psi = q(x_i, a), spread by the DR correction (centred so that its mean is DM)

A policy replaces ``1{a_i = a}`` by ``pi(a_i | i)`` and ``q(x_i, a)`` by ``sum_a pi(a | i)
q(x_i, a)``. The outcome model ``q`` is the package's batched pooled GLM
(``causalrec.glm.SegmentGLM``: per item an intercept and slope deviations shrunk toward
shared ones), cross-fitted so that DR's influence-function SE
is honest. Predictions for every item are formed for one chunk of rows at a time: a rows x
items matrix never exists for the whole log.

For 0/1 outcomes with rare events (clicks), the plug-in variance of an item with no click is
zero and with one click it is a coin toss. Each SE is therefore floored at the SE the same
estimator would have if the item's rows had the log's mean rate (the pooled, null variance,
``sqrt(r (1 - r) sum w^2) / n``), and the status says ``few_events``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..base import BaseEstimator
from ..estimate.folds import assign_folds, fold_content
from ..glm.layout import resolve_device
from ..inference import critical_value
from ..schema import MISSING_POLICIES
from ..utils.validation import Boolean, InstanceOf, Integer, Interval, Options
from .log import _bandit_log, _catalogue, inverse_propensity_weights
from .outcome import OutcomeModel
from .policy import ROW_SUM_TOL, _Policy
from .summary import BanditSummary

__all__ = ["BanditEstimator"]

METHODS = ("dr", "ipw", "snipw", "dm")
OUTCOME_SEGMENTS = ("item", "item_position")


class BanditEstimator(OutcomeModel, BaseEstimator):
    """Per-item values and policy values from a log of (context, shown item, outcome,
    logged propensity).

    Parameters
    ----------
    method : "dr" (doubly robust, default), "ipw", "snipw" (self-normalised IPW) or "dm"
        (direct method: the outcome model alone).
    n_folds : cross-fitting folds for the outcome model (stratified by item and outcome).
    outcome_segments : "item" (default; position enters as a covariate) or "item_position"
        (one segment per item x position).
    shrinkage : ridge on an item's slope deviations from the shared slopes.
    intercept_shrinkage : ridge on an item's intercept deviation; with a handful of clicks
        per item the item effects borrow strength from the overall click rate.
    max_levels : categorical confounders keep their most frequent levels (rest pooled).
    max_weight : bound on an importance weight 1 / p: "auto" (default) caps it at the number
        of logged rows (a logged probability below 1 / n would let one row outweigh the whole
        log), a number caps it there, None leaves weights unbounded. Clipped rows are counted
        per item (``n_clipped``) and their items get status "clipped_weights".
    min_shown, min_ess, min_events : thresholds of the ``status`` column (shown rows,
        effective sample size of the weights, rows with a nonzero 0/1 outcome).
    se_floor : for 0/1 outcomes, floor each standard error at the one the estimator would
        have at the log's mean outcome rate (see the module docstring).
    alpha : 1 - confidence level.
    device : for the outcome model ("auto": CUDA when present). dtype : its precision;
        float64 by default, since Newton steps on a rare-click logistic model stall in float32.
    chunk_rows : rows per chunk when predicting every item (None: sized to ~256 MiB).
    seed : fixes the folds.
    missing : "error" (default) or "indicator": missing values in numeric confounders are
        bad input, or are filled (median) with a 0/1 indicator column each in the outcome
        model (``InteractionLog``).

    Attributes
    ----------
    values_ : DataFrame, one row per item (see ``estimate_item_values``).
    items_ : the item catalogue (ndarray). positions_ : the logged positions (or None).
    fold_ : Series, the cross-fitting fold of every row.
    outcome_coef_ : per fold, (segments, 1 + confounder columns) coefficients of the outcome
        model (intercept first), or None for ipw / snipw.
    design_columns_ : names of the outcome model's covariates.
    max_weight_ : the cap applied to the weights (inf with ``max_weight=None``). propensity_check_ : per position (one row
        "all" without a position): rows, mean inverse propensity, catalogue size, its z score
        and whether it is plausible (at most the catalogue size, within sampling error).
    """

    _parameter_constraints = {
        "method": [Options(*METHODS)],
        "n_folds": [Integer(1, None)],
        "outcome_segments": [Options(*OUTCOME_SEGMENTS)],
        "shrinkage": [Interval(0, None, "neither")],
        "intercept_shrinkage": [Interval(0, None, "neither")],
        "max_levels": [Integer(2, None)],
        "max_weight": [Options("auto", None), Interval(1, None)],
        "min_shown": [Integer(0, None)],
        "min_ess": [Interval(0, None)],
        "min_events": [Integer(0, None)],
        "se_floor": [Boolean()],
        "alpha": [Interval(0, 1, "neither")],
        "device": [InstanceOf((str, torch.device), "'auto', 'cpu', 'cuda' or a torch.device")],
        "dtype": [Options("float32", "float64", torch.float32, torch.float64)],
        "chunk_rows": [Options(None), Integer(1, None)],
        "seed": [Integer(0, 2**63 - 1)],
        "max_iter": [Integer(1, None)],
        "missing": [Options(*MISSING_POLICIES)],
    }

    def __init__(self, *, method="dr", n_folds=2, outcome_segments="item", shrinkage=10.0,
                 intercept_shrinkage=1.0, max_levels=50, max_weight="auto", min_shown=10,
                 min_ess=10.0, min_events=5, se_floor=True, alpha=0.05, device="auto",
                 dtype="float64", chunk_rows=None, seed=0, max_iter=50, missing="error"):
        self.method = method
        self.n_folds = n_folds
        self.outcome_segments = outcome_segments
        self.shrinkage = shrinkage
        self.intercept_shrinkage = intercept_shrinkage
        self.max_levels = max_levels
        self.max_weight = max_weight
        self.min_shown = min_shown
        self.min_ess = min_ess
        self.min_events = min_events
        self.se_floor = se_floor
        self.alpha = alpha
        self.device = device
        self.dtype = dtype
        self.chunk_rows = chunk_rows
        self.seed = seed
        self.max_iter = max_iter
        self.missing = missing

    # ------------------------------------------------------------------ fitting
    def fit(self, df: pd.DataFrame, item: str, outcome: str, propensity: str,
            position: str | None = None, confounders=None, items=None) -> "BanditEstimator":
        """Validate the log, fit the cross-fitted outcome model (dr / dm) and the item values.

        ``propensity`` is the logged probability of the shown item (in its position when
        ``position`` is given). ``confounders`` are user/context columns: numeric ones enter as
        they are, others (e.g. hashed strings) are one-hot encoded. ``items`` is the item
        catalogue (default: the logged items, sorted).
        """
        self._validate_params()
        log = _bandit_log(df, item, outcome, propensity, position, confounders, self.missing)
        self.position_ = position
        self.items_ = _catalogue(df[item], items)
        self._a = pd.Index(self.items_).get_indexer(df[item]).astype(np.int64)
        if position is not None:
            self.positions_ = np.sort(df[position].unique())
            self._k = np.searchsorted(self.positions_, df[position].to_numpy()).astype(np.int64)
        else:
            self.positions_, self._k = None, np.zeros(len(df), dtype=np.int64)
        self._y = df[outcome].to_numpy(dtype=np.float64, copy=True)
        k_all = self._k if position is not None else np.zeros(len(df), dtype=np.int64)
        n_groups = 1 if self.positions_ is None else len(self.positions_)
        self._w0, self._clipped, self.max_weight_, check = inverse_propensity_weights(
            df[propensity].to_numpy(dtype=np.float64), self.max_weight, k_all, n_groups,
            len(self.items_), propensity)
        check.insert(0, position or "position", self.positions_ if position else ["all"])
        self.propensity_check_ = check
        self.outcome_binary_ = log.outcome_is_binary
        self._device = resolve_device(self.device)
        click = (self._y > 0).astype(np.int64) if self.outcome_binary_ else np.zeros(len(df), np.int64)
        content = fold_content([item], [position] if position else [], log.confounders,
                               log.categorical, propensity=propensity)
        self.fold_ = pd.Series(assign_folds(df, content, self._a, click, self._y, self.n_folds,
                                            self.seed, item_columns=[item]),
                               index=df.index, name="fold")
        self.outcome_coef_, self._q_obs, self._n_pos_seg = None, None, 1
        if self.method in ("dr", "dm"):
            self._fit_outcome_model(log)
        self.values_ = self.item_values()
        return self

    # ------------------------------------------------------------------ item values
    def item_values(self, by_position: bool = False, method: str | None = None) -> pd.DataFrame:
        """Value of showing each item (one row per item, or per item x position).

        ``method`` overrides the estimator's method; the fitted outcome model is reused, so
        one dr / dm fit gives all four estimators."""
        self._check_fitted()
        method = self._resolve_method(method)
        g, groups = self._groups(by_position)
        G, A, n_g = len(groups), len(self.items_), np.bincount(g, minlength=len(groups))
        a, y, w0 = self._a, self._y, self._w0
        cell = g * A + a
        shown_w = np.bincount(cell, weights=w0, minlength=G * A).reshape(G, A)
        shown_w2 = np.bincount(cell, weights=w0 ** 2, minlength=G * A).reshape(G, A)
        n_shown = np.bincount(cell, minlength=G * A).reshape(G, A)
        n_events = np.bincount(cell, weights=(y != 0).astype(float), minlength=G * A).reshape(G, A)
        n_clipped = np.bincount(cell, weights=self._clipped, minlength=G * A).reshape(G, A)
        implausible = self._implausible(g, G)[:, None] & np.ones((1, A), dtype=bool)
        with np.errstate(invalid="ignore", divide="ignore"):
            ess = shown_w ** 2 / shown_w2
        # the lift compares an item with a uniformly random *reference* item: items whose
        # weights are sound, so that one item's extreme or clipped weights move only itself
        reference = (ess >= self.min_ess) & (n_clipped == 0) & ~implausible

        base, corr, centre = None, None, np.zeros((G, A))
        if method == "ipw":
            corr = w0 * y
        elif method == "snipw":
            with np.errstate(invalid="ignore", divide="ignore"):
                V = np.bincount(cell, weights=w0 * y, minlength=G * A).reshape(G, A) / shown_w
            V = np.nan_to_num(V)
            base = V
            corr = n_g[g] * w0 * (y - V[g, a]) / np.where(shown_w[g, a] > 0, shown_w[g, a], 1.0)
        else:
            corr = w0 * (y - self._observed_q())
            if method == "dm":
                centre = np.bincount(cell, weights=corr, minlength=G * A).reshape(G, A) / n_g[:, None]
        sums = self._accumulate_items(g, G, base, corr, centre, reference,
                                      use_model=method in ("dr", "dm"))
        value, se = _mean_se(sums["s1"], sums["s2"], n_g[:, None])
        lift, lift_se = _mean_se(sums["d1"], sums["d2"], n_g[:, None])
        if self.outcome_binary_ and self.se_floor:
            floor = _se_floor(method, shown_w, shown_w2, n_g[:, None],
                              (np.bincount(g, weights=y, minlength=G) / n_g)[:, None])
            se, lift_se = np.fmax(se, floor), np.fmax(lift_se, floor)
        unsupported = n_shown == 0
        if method in ("ipw", "snipw"):
            # weighting cannot value an item never shown (it is no reference item either, so
            # the other items' lifts stand)
            value[unsupported] = lift[unsupported] = np.nan
        se[unsupported] = lift_se[unsupported] = np.nan
        status = self._status(ess, n_events)
        status[n_clipped > 0] = "clipped_weights"
        status[implausible] = "implausible_propensity"
        status[n_shown < self.min_shown] = "too_few_rows"
        status[unsupported] = "not_shown"
        lo, hi = self._interval(value, se, clip=self.outcome_binary_)
        lift_lo, lift_hi = self._interval(lift, lift_se, clip=False)
        table = pd.DataFrame({
            "item": np.tile(self.items_, G),
            "value": value.ravel(), "se": se.ravel(), "ci_low": lo.ravel(), "ci_high": hi.ravel(),
            "n_shown": n_shown.ravel(), "ess": ess.ravel(), "status": status.ravel(),
            "lift": lift.ravel(), "lift_se": lift_se.ravel(),
            "lift_ci_low": lift_lo.ravel(), "lift_ci_high": lift_hi.ravel(),
            "n_events": n_events.ravel().astype(np.int64), "n_rows": np.repeat(n_g, A),
            "n_clipped": n_clipped.ravel().astype(np.int64), "lift_reference": reference.ravel(),
        })
        if by_position:
            table.insert(1, self.position_, np.repeat(groups, A))
        return table

    def _accumulate_items(self, g, G, base, corr, centre, reference, use_model) -> dict:
        """Per (group, item): sums of psi, psi^2 and of psi minus its row mean over the
        group's reference items (the effect against a uniformly random one), chunk by chunk."""
        dev, A = self._device, len(self.items_)
        g_t, a_t = torch.as_tensor(g, device=dev), torch.as_tensor(self._a, device=dev)
        corr_t = torch.as_tensor(corr, dtype=torch.float64, device=dev)
        centre_t = torch.as_tensor(centre, dtype=torch.float64, device=dev)
        base_t = None if base is None else torch.as_tensor(base, dtype=torch.float64, device=dev)
        ref_t = torch.as_tensor(reference, dtype=torch.float64, device=dev)
        ref_n = ref_t.sum(1, keepdim=True)  # 0 reference items: lift NaN
        sums = {k: torch.zeros(G, A, dtype=torch.float64, device=dev) for k in ("s1", "s2", "d1", "d2")}
        for rows, q in self._chunks(use_model):
            gr = g_t[rows]
            if q is not None:
                psi = q
            elif base_t is not None:
                psi = base_t[gr].clone()
            else:
                psi = torch.zeros(len(rows), A, dtype=torch.float64, device=dev)
            psi[torch.arange(len(rows), device=dev), a_t[rows]] += corr_t[rows]
            psi -= centre_t[gr]
            d = psi - (psi * ref_t[gr]).sum(1, keepdim=True) / ref_n[gr]
            for key, val in (("s1", psi), ("s2", psi ** 2), ("d1", d), ("d2", d ** 2)):
                sums[key].index_add_(0, gr, val)
        return {k: v.cpu().numpy() for k, v in sums.items()}

    def _status(self, ess, n_events) -> np.ndarray:
        """"ok", or why the estimate is weak (callers add their own, stronger reasons)."""
        status = np.full(np.shape(ess), "ok", dtype=object)
        if self.outcome_binary_:
            status[n_events < self.min_events] = "few_events"
        status[~(ess >= self.min_ess)] = "poor_overlap"
        return status

    def _interval(self, value, se, clip: bool):
        """Normal interval; for 0/1 outcomes a value's interval is cut to [0, 1], but always
        contains the estimate (DR may put an estimate slightly below 0)."""
        z = critical_value(self.alpha)
        lo, hi = value - z * se, value + z * se
        if not clip:
            return lo, hi
        return np.fmin(np.clip(lo, 0, 1), value), np.fmax(np.clip(hi, 0, 1), value)

    def _implausible(self, g, G) -> np.ndarray:
        """Per group of ``_groups``: holds a position whose propensities failed the check."""
        bad_k = ~self.propensity_check_["plausible"].to_numpy()
        return np.bincount(g, weights=bad_k[self._k], minlength=G) > 0

    def _resolve_method(self, method):
        method = self.method if method is None else method
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method in ("dr", "dm") and self.outcome_coef_ is None:
            raise ValueError(f"method {method!r} needs the outcome model: fit with method='dr' or 'dm'")
        return method

    def _groups(self, by_position: bool):
        if not by_position:
            return np.zeros(len(self._y), dtype=np.int64), np.array(["all"])
        if self.position_ is None:
            raise ValueError("by_position=True needs the position column (fit(..., position=...))")
        return self._k, self.positions_

    # ------------------------------------------------------------------ policy value
    def policy_value(self, policy, by_position: bool = False, method: str | None = None) -> pd.DataFrame:
        """Estimated value of a policy given as item probabilities per logged row.

        ``policy`` : a (rows x items) array in the order of ``items_``, a DataFrame with item
        columns (absent items get probability 0), or a sparse pair ``(item_ids, probs)`` of
        (rows x k) arrays (e.g. a top-k list). Rows follow the log's row order.
        Returns one row (or one per position): ``value, se, ci_low, ci_high, n, ess, status,
        logged_value, unsupported_mass, n_clipped, method``. ``method`` overrides the
        estimator's. ``status`` as for item values, or "unsupported" (the policy puts mass on
        items never shown in the group).
        """
        self._check_fitted()
        method = self._resolve_method(method)
        pol = _Policy(policy, self.items_, len(self._y))
        g, groups = self._groups(by_position)
        G, n_g, y = len(groups), np.bincount(g, minlength=len(groups)), self._y
        w = pol.at(self._a) * self._w0
        sw = np.bincount(g, weights=w, minlength=G)
        sw2 = np.bincount(g, weights=w ** 2, minlength=G)
        n_events = np.bincount(g, weights=((w > 0) & (y != 0)).astype(float), minlength=G)
        n_clipped = np.bincount(g, weights=(w > 0) & self._clipped, minlength=G).astype(np.int64)
        if method == "ipw":
            psi = w * y
        elif method == "snipw":
            with np.errstate(invalid="ignore", divide="ignore"):
                V = np.bincount(g, weights=w * y, minlength=G) / sw
                psi = V[g] + n_g[g] * w * (y - V[g]) / sw[g]
        else:
            psi = w * (y - self._observed_q())
            if method == "dm":
                psi = psi - (np.bincount(g, weights=psi, minlength=G) / n_g)[g]
            for rows, q in self._chunks():
                r = rows.cpu().numpy()
                psi[r] += pol.expect(q, r)
        value, se = _mean_se(np.bincount(g, weights=psi, minlength=G),
                             np.bincount(g, weights=psi ** 2, minlength=G), n_g)
        with np.errstate(invalid="ignore", divide="ignore"):
            ess = sw ** 2 / sw2
        logged = np.bincount(g, weights=y, minlength=G) / n_g
        if self.outcome_binary_ and self.se_floor:
            se = np.fmax(se, _se_floor(method, sw, sw2, n_g, logged))
        shown = np.bincount(g * len(self.items_) + self._a,
                            minlength=G * len(self.items_)).reshape(G, -1) > 0
        unsupported = np.bincount(g, weights=pol.mass_outside(shown[g]), minlength=G) / n_g
        status = self._status(ess, n_events)
        status[n_clipped > 0] = "clipped_weights"
        status[self._implausible(g, G)] = "implausible_propensity"
        status[unsupported > ROW_SUM_TOL] = "unsupported"
        lo, hi = self._interval(value, se, clip=self.outcome_binary_)
        table = pd.DataFrame({
            "value": value, "se": se, "ci_low": lo, "ci_high": hi,
            "n": n_g, "ess": ess, "status": status, "logged_value": logged,
            "unsupported_mass": unsupported, "n_clipped": n_clipped, "method": method,
        })
        if by_position:
            table.insert(0, self.position_, groups)
        return table

    # ------------------------------------------------------------------ results
    def _check_fitted(self):
        self._check_is_fitted("fold_")

    def summary(self, top: int = 10) -> "BanditSummary":
        self._check_fitted()
        return BanditSummary(self, top=top)


def _se_floor(method, sum_w, sum_w2, n, rate):
    """SE of the estimator if every weighted row had the group's mean 0/1 outcome ``rate``
    (its variance under the pooled rate): a rare-event item with zero or one click is not
    more precise than an average item shown with the same weights."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(rate * (1 - rate) * sum_w2) / (sum_w if method == "snipw" else n)


def _mean_se(s1, s2, n):
    """Mean and standard error of a mean from sums of values and squares."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = np.maximum(s2 - n * mean ** 2, 0) / (n - 1)
        return mean, np.sqrt(var / n)
