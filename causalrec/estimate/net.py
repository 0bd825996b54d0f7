"""Own and net effects: does recommending an item add to a unit's total engagement, or move it
from the unit's other items?

Estimand. For item A, over the units that hold A as a candidate, the net effect is
``E[Y_total(T_A = 1) - Y_total(T_A = 0)]``: the effect of recommending A on the unit's total
outcome (the sum of ``outcome`` over the unit's rows), the unit's other recommendations drawn
as the logging policy draws them given the confounders. The own effect is the item effect of
``ItemEffectEstimator`` (A's own outcome); the spillover is net - own (negative:
cannibalisation). Other estimands need more than this log: "A in place of the item it
displaces" needs the slate composition (a fixed slate size, which is detected and warned
about), "A added to a fixed set of other recommendations" needs a model of how the other
items' outcomes depend on the whole slate.

Method, on the item-effects engine (one fit of its nuisances, folds grouped by unit):
each row's own out-of-fold outcome prediction at its observed arm, summed over the unit's
other rows, is a regression adjustment ``O`` for the rest of the total. It is built from the
other rows' own confounders and recommendations only, never from A's recommendation (which
would leak A's effect into the adjustment). The spillover is then the AIPW of the rest of the
total with ``mu0 = mu1 = O`` and A's propensity, and the net effect the AIPW of the total
with ``mu_t = mu_t(A) + O``: the influence value of the net is the own one plus the
spillover one, row by row (one row per unit and item), so the spillover's interval carries
the covariance of own and net.
"""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from ..base import BaseEstimator
from ..exceptions import DataWarning
from ..backend import is_distributed
from ..schema import InteractionLog, Roles, SchemaError
from ..summary import Summary
from ..utils.validation import Boolean, InstanceOf, Options
from .design import segment_ids
from .estimator import ItemEffectEstimator
from .folds import unit_folds
from .net_pairs import check_pair_settings, pair_effects, score_table
from .scores import NO_ESTIMATE, NO_OVERLAP

__all__ = ["NetEffectEstimator", "estimate_net_effects", "spillover_pairs"]

_ESTIMATE = ("ate", "se", "ci_low", "ci_high", "p_value")
# diagnostics carried over from the item-effects table (same rows, same propensities)
_DIAGNOSTICS = ("dof", "naive_ate", "ess_treated", "ess_control", "e_min", "e_max",
                "share_clipped", "share_outside_support", "converged")


class NetEffectEstimator(BaseEstimator):
    """Own, net and spillover effect of recommending each item (see the module docstring
    for the estimand and the method).

    Parameters
    ----------
    estimator : an unfitted ``ItemEffectEstimator`` holding the nuisance and inference
        options (default: its defaults). Its ``n_repeats`` must resolve to 1 (a repeat draws
        row folds, not unit folds), its method "aipw" or "ipw" (outcome regression has no
        model of the rest of the total under each arm), its ``trim`` None or at least
        ``clip``. Every nuisance option runs (the folds go through ``fit(folds=...)``).
    additive : "check" (default): an outcome whose values are fractions in [0, 1] (a rate
        per row) is refused, since the sum of rates is not the unit's engagement; True skips
        the check (the sum is meaningful, e.g. shares of one budget).

    Attributes
    ----------
    effects_ : one row per item: ``item, own_ate, own_se, own_ci_low, own_ci_high,
        own_p_value, net_ate, net_se, net_ci_low, net_ci_high, net_p_value, spillover,
        spillover_se, spillover_ci_low, spillover_ci_high, spillover_p_value, n, n_treated,
        n_control, n_single, status`` and the item table's overlap diagnostics. ``status`` is
        the item-effects status (the rows and propensities are the same); items without an
        own estimate have no net one. ``n_single``: the item's rows whose unit has no other
        candidate (their rest is 0; they count, with spillover 0).
    item_estimator_ : the fitted ``ItemEffectEstimator`` (its ``effects_`` is the own table).
    unit_ : the unit column; ``fold_``: the unit-grouped fold of each row.
    """

    _parameter_constraints = {
        "estimator": [Options(None), InstanceOf(ItemEffectEstimator, "an ItemEffectEstimator")],
        "additive": [Options("check"), Boolean()],
    }

    def __init__(self, *, estimator=None, additive="check"):
        self.estimator = estimator
        self.additive = additive

    def fit(self, log: InteractionLog, unit: str | None = None) -> "NetEffectEstimator":
        """Fit on a validated log; ``unit`` names the unit column (default: the log's unit
        role, else its ``user`` column)."""
        self._validate_params()
        if not isinstance(log, InteractionLog):
            raise TypeError("fit expects an InteractionLog; use estimate_net_effects for a DataFrame")
        item_est = (self.estimator or ItemEffectEstimator()).clone()
        if item_est.n_repeats == "auto":
            item_est.set_params(n_repeats=1)
        if item_est.n_repeats != 1:
            raise ValueError("net effects need n_repeats=1: further repeats draw folds by row, "
                             "and the rest-of-total adjustment needs folds grouped by unit")
        if item_est.trim is not None and item_est.trim < item_est.clip:
            raise ValueError("net effects need trim >= clip (or no trim): they reuse the "
                             "clipped propensities, which cannot tell a row below trim")
        if item_est.method == "or":
            raise ValueError("method='or' has no model of the rest of a unit's total under each "
                             "arm; use 'aipw' (default) or 'ipw'")
        df = log.data
        if unit is None:  # the log's unit role where it has one, else its user column
            unit = getattr(log, "unit", None) or log.user
        seg, segments = segment_ids(df, log.item_columns)
        units = _check_units(df, unit, seg, len(segments))
        if getattr(log, "unit", None) != unit:  # the unit role: the item fit's folds and
            log = replace(log, unit=unit)      # early-stopping rows are then whole units
        if self.additive == "check":
            _check_additive(df[log.outcome], log.outcome)
        _warn_fixed_slates(units, df[log.treatment].to_numpy(dtype=np.int64))
        folds = unit_folds(df[unit], item_est.n_folds, item_est.seed)
        item_est.fit(log, folds=folds)
        self.item_estimator_, self.unit_ = item_est, unit
        self.fold_ = pd.Series(folds, index=df.index, name="fold")
        self._units = units
        self.effects_ = self._net_table(item_est, log, units, seg, folds)
        return self

    # ------------------------------------------------------------------ the tables
    def _net_table(self, est, log, units, seg, folds) -> pd.DataFrame:
        """``seg``: each row's item code in the order of ``est.segments_`` (the same
        ``segment_ids`` of the same columns)."""
        df = log.data
        n_seg = len(est.segments_)
        t = df[log.treatment].to_numpy(dtype=np.float64)
        y = df[log.outcome].to_numpy(dtype=np.float64)
        e = est.propensity_.to_numpy()
        mu0, mu1 = est.mu0_.to_numpy(), est.mu1_.to_numpy()
        m_obs = observed_arm_prediction(mu0, mu1, t, y, seg, folds, n_seg)
        n_units = int(units.max()) + 1
        rest = np.bincount(units, weights=y, minlength=n_units)[units] - y
        adjust = np.bincount(units, weights=m_obs, minlength=n_units)[units] - m_obs
        use = np.isfinite(e)
        args = dict(seg=seg[use], t=t[use], e=e[use], folds=folds[use], n_seg=n_seg)
        spill = score_table(est, y=rest[use], mu0=adjust[use], mu1=adjust[use], **args)
        net = score_table(est, y=(y + rest)[use], mu0=(mu0 + adjust)[use],
                          mu1=(mu1 + adjust)[use], **args)
        self._rows = dict(use=use, seg=seg, t=t, y=y, e=e, m_obs=m_obs, folds=folds)
        own = est.effects_
        keys = list(est.segments_.columns)
        out = own[["item"] + keys[1:]].copy()
        for prefix, table in (("own", own), ("net", net), ("spillover", spill)):
            for name in _ESTIMATE:
                column = f"{prefix}_{name}" if not (prefix == "spillover" and name == "ate") \
                    else "spillover"
                out[column] = table[name].to_numpy()
        single = np.bincount(units, minlength=n_units)[units] == 1
        out["n_single"] = np.bincount(seg, weights=single, minlength=n_seg).astype(np.int64)
        for name in ("n", "n_treated", "n_control", "status") + _DIAGNOSTICS:
            out[name] = own[name].to_numpy()
        no_number = out["status"].isin(NO_ESTIMATE + (NO_OVERLAP,)).to_numpy()
        for prefix in ("net_", "spillover"):
            cols = [c for c in out.columns if c.startswith(prefix)]
            out.loc[no_number, cols] = np.nan
        out.attrs.update(own.attrs, unit=self.unit_, estimand=(
            "effect of recommending the item on the unit's total outcome, the unit's other "
            "recommendations drawn as the logging policy draws them given the confounders"))
        return out

    def summary(self, top: int = 10):
        """Header facts and the items with the largest |spillover| (a ``Summary``)."""
        self._check_is_fitted("effects_")
        eff = self.effects_
        ok = eff[eff["status"] == "ok"]
        below = ok["net_ci_high"] < ok["own_ci_low"]
        info = {"Estimand": "effect of recommending the item on the unit's total outcome",
                "Unit": self.unit_, "Units": int(self._units.max()) + 1, "Rows": int(eff["n"].sum()),
                "Items": len(eff), "Items estimated (ok)": len(ok),
                "Cross-fitting folds (by unit)": self.item_estimator_.n_folds,
                "Clearly negative spillover (interval < 0)": int((ok["spillover_ci_high"] < 0).sum()),
                "Net clearly below own (intervals apart)": int(below.sum())}
        strongest = ok.reindex(ok["spillover"].abs().sort_values(ascending=False).index[:top])
        cols = ["own_ate", "net_ate", "spillover", "spillover_ci_low", "spillover_ci_high", "n"]
        return Summary(info, eff["status"].value_counts(), strongest.set_index("item")[cols],
                       "Largest |spillover|", title="Own and net effects of recommendation")

    def spillover_pairs(self, top: int = 10, category: str | None = None, fdr: float = 0.1,
                        min_rows_per_arm: int | None = None) -> pd.DataFrame:
        """Which other items (or categories) the ``top`` items with the largest |spillover|
        take from or add to; see the function ``causalrec.estimate.net.spillover_pairs``."""
        self._check_is_fitted("effects_")
        return pair_effects(self, top=top, category=category, fdr=fdr,
                            min_rows_per_arm=min_rows_per_arm)


def observed_arm_prediction(mu0, mu1, t, y, seg, folds, n_seg) -> np.ndarray:
    """Each row's own out-of-fold outcome prediction at its observed arm; rows the item fit
    did not model (items without an estimate) get their item and arm's mean outcome in the
    other folds (never their own outcome, which would absorb the spillover they receive)."""
    m = np.where(t > 0.5, mu1, mu0)
    missing = ~np.isfinite(m)
    if missing.any():
        n_folds = int(folds.max()) + 1
        cell = (seg * 2 + (t > 0.5)) * n_folds + folds
        size = n_seg * 2 * n_folds
        sums = np.bincount(cell, weights=y, minlength=size).reshape(-1, n_folds)
        counts = np.bincount(cell, minlength=size).reshape(-1, n_folds).astype(float)
        other_sum = (sums.sum(1, keepdims=True) - sums).ravel()[cell]
        other_n = (counts.sum(1, keepdims=True) - counts).ravel()[cell]
        with np.errstate(invalid="ignore", divide="ignore"):
            fallback = np.where(other_n > 0, other_sum / other_n, np.nan)
        overall = [y[folds != f].mean() if (folds != f).any() else y.mean() for f in range(n_folds)]
        fallback = np.where(np.isfinite(fallback), fallback, np.asarray(overall)[folds])
        m = np.where(missing, fallback, m)
    return m


def _check_units(df: pd.DataFrame, unit, seg: np.ndarray, n_seg: int) -> np.ndarray:
    """Unit codes of the rows; a clear error for a missing, constant or ambiguous unit."""
    if unit is None:
        raise SchemaError(None, "net effects need a unit column (unit=...): the user or "
                          "session whose total outcome the items share")
    if unit not in df.columns:
        raise SchemaError(unit, "missing from the log (role 'unit')")
    ids = df[unit]
    if ids.isna().any():
        raise SchemaError(unit, f"{int(ids.isna().sum())} missing unit ids")
    units, distinct = pd.factorize(ids)
    if len(distinct) < 2:
        raise SchemaError(unit, "a single unit: net effects compare units' totals")
    n = np.bincount(units)
    if (n == 1).all():
        raise SchemaError(unit, "every unit has a single candidate: its total is its own "
                          "outcome, so the net effect is the own effect (use "
                          "estimate_item_effects)")
    repeated = int(pd.Series(units.astype(np.int64) * n_seg + seg).duplicated().sum())
    if repeated:
        raise SchemaError(unit, f"{repeated} (unit, item) pairs occur more than once: a unit's "
                          "total would count them twice (use a finer unit, e.g. a session)")
    return units.astype(np.int64)


def _check_additive(values: pd.Series, column: str) -> None:
    """Refuse a rate per row (fractions in [0, 1]): its sum over a unit is not engagement."""
    v = values.to_numpy(dtype=np.float64)
    fractional = (v != np.round(v)).any()
    if fractional and v.min() >= 0 and v.max() <= 1:
        raise SchemaError(column, "looks like a rate per row (fractions in [0, 1]); a unit's "
                          "total is the sum of its rows' outcomes, which for rates is not the "
                          "unit's engagement. Use counts or amounts (clicks, minutes, revenue), "
                          "or pass additive=True if the sum is meaningful")


def _warn_fixed_slates(units: np.ndarray, t: np.ndarray) -> None:
    per_unit = np.bincount(units, weights=t).astype(np.int64)
    if len(per_unit) > 1 and per_unit.min() == per_unit.max() and per_unit[0] > 0:
        warnings.warn(
            f"every unit has exactly {per_unit[0]} recommended items: the log looks like "
            "fixed-size slates. Recommending an item then displaces another one, so the net "
            "effect estimated here contrasts a slate with the item against a slate of the same "
            "size without it (it includes the loss of whatever the item displaces), and the "
            "rows' recommendations are not drawn independently given the confounders; an "
            "'item added on top' estimand cannot be learned from such a log",
            DataWarning, stacklevel=3)


def estimate_net_effects(log: pd.DataFrame, item: str, treatment: str, outcome: str, unit: str,
                         confounders=None, categorical=None, text=None, propensity=None,
                         seed: int = 0, additive="check", missing="error",
                         **estimator_options) -> pd.DataFrame:
    """Own, net and spillover effect of recommending each item, with joint intervals.

    Parameters
    ----------
    log : one row per (unit, candidate item); ``treatment`` is 1 when the item was
        recommended to the unit, ``outcome`` the unit's engagement with that item (additive:
        the unit's total outcome is its sum over the unit's rows).
    unit : the user or session column whose total the items share.
    confounders, categorical, text, propensity : as in ``estimate_item_effects``.
    seed, **estimator_options : parameters of ``ItemEffectEstimator`` (nuisance, n_folds,
        alpha, ...); cross-fitting folds are grouped by unit.
    additive : see ``NetEffectEstimator``.
    missing : "error" (default) or "indicator", as in ``estimate_item_effects``.

    Returns
    -------
    DataFrame, one row per item (``NetEffectEstimator.effects_``): ``own_*`` (the item
    effect), ``net_*`` (effect on the unit's total), ``spillover`` = net - own with its own
    interval (``spillover_*``, from the joint influence function), counts, ``status``.
    The estimand is the effect of recommending the item on the unit's total outcome, the
    unit's other recommendations drawn as the logging policy draws them given the
    confounders (see ``causalrec.estimate.net``). A log of fixed-size slates gets a
    ``DataWarning``: there an item displaces another, which this estimand cannot separate.
    """
    if is_distributed(log):
        raise TypeError("estimate_net_effects runs on pandas frames; collect the Spark frame "
                        "(or a sample of its units) with toPandas()")
    roles = Roles.from_arguments(item=item, treatment=treatment, outcome=outcome,
                                 confounders=confounders, categorical=categorical, text=text,
                                 propensity=propensity, unit=unit, missing=missing)
    data = InteractionLog.from_roles(log, roles)
    estimator = ItemEffectEstimator(seed=seed, **estimator_options)
    return NetEffectEstimator(estimator=estimator, additive=additive).fit(data, unit=unit).effects_


def spillover_pairs(source, top: int = 10, category: str | None = None, fdr: float = 0.1,
                    min_rows_per_arm: int | None = None, **roles_and_options) -> pd.DataFrame:
    """Effect of recommending each of the ``top`` items with the largest |spillover| on the
    outcome of every other item that shares units with it.

    Parameters
    ----------
    source : a fitted ``NetEffectEstimator``, or a DataFrame log, then fitted with
        ``estimate_net_effects``'s ``roles_and_options`` (item, treatment, outcome, unit, ...).
    top : how many items (status "ok", largest |spillover| first).
    category : a column constant within each item (e.g. its category): the effects are then
        on each category's total outcome over the unit's other candidates in it (grouped by
        category), one row per (item, other category).
    fdr : the Benjamini-Hochberg level of ``flagged`` (over all pairs tested in this call).
    min_rows_per_arm : pairs with fewer rows in an arm of A get status "too_few_rows" (not
        tested; default: the item estimator's ``min_rows_per_arm``).

    Each pair is estimated like a spillover (``causalrec.estimate.net``): the rows of A whose
    unit also holds B, B's outcome against A's recommendation, A's propensity, and B's own
    out-of-fold outcome prediction at B's observed arm as the adjustment (it never reads A's
    recommendation). The ``top`` items are chosen on the same data, so their pair estimates
    lean towards the direction they were chosen for (the winner's curse; over all items,
    ``top=len(effects_)``, the intervals hold their level).

    Returns one row per pair: ``item``, ``other``, ``effect``, ``se``, ``ci_low``,
    ``ci_high``, ``p_value``, ``q_value``, ``flagged``, ``n``, ``n_treated``, ``n_control``,
    ``status`` (``other`` is the category
    when ``category`` is given), sorted by item then effect (largest losses first).
    """
    check_pair_settings(top, fdr)  # before a fit
    if isinstance(source, pd.DataFrame):
        source = _fit_frame(source, roles_and_options)
    elif roles_and_options:
        raise TypeError("roles and options go with a DataFrame log, not a fitted estimator")
    if not isinstance(source, NetEffectEstimator):
        raise TypeError("spillover_pairs expects a fitted NetEffectEstimator or a DataFrame log")
    return source.spillover_pairs(top=top, category=category, fdr=fdr,
                                  min_rows_per_arm=min_rows_per_arm)


def _fit_frame(df, roles_and_options) -> NetEffectEstimator:
    """A ``NetEffectEstimator`` fitted on a DataFrame with ``estimate_net_effects``'s roles
    and options."""
    options = dict(roles_and_options)
    roles = Roles.from_arguments(**{name: options.pop(name, None) for name in (
        "item", "treatment", "outcome", "confounders", "categorical", "text", "propensity")},
                                 missing=options.pop("missing", "error"))
    unit, additive = options.pop("unit", None), options.pop("additive", "check")
    log = InteractionLog.from_roles(df, roles)
    return NetEffectEstimator(estimator=ItemEffectEstimator(**options),
                              additive=additive).fit(log, unit=unit)
