"""The per-item results contract of the effect estimator: ``effect``, ``effect_interval``
(arrays, EconML's convention), ``effect_interval_frame``, ``summary_frame``, ``ate`` (the
overall effect) and ``summary`` read its fitted ``effects_`` table."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..inference import interval, p_value
from .summary import EffectSummary

__all__ = ["EffectResults"]


class EffectResults:
    """Mixin: what an analyst reads from a fitted ``ItemEffectEstimator``."""

    def _check_fitted(self):
        self._check_is_fitted("effects_")

    def effect(self) -> pd.Series:
        """Estimated ATE per item."""
        self._check_fitted()
        return self.effects_.set_index(self._keys())["ate"]

    def effect_interval(self, alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lb, ub)``: two arrays, the lower and upper confidence limits of every item at
        level 1 - alpha (default: the estimator's alpha), in the order of ``effects_`` and
        ``effect()`` (EconML's convention). Student t with the item's ``dof`` degrees of
        freedom (see ``causalrec.inference``); NaN where an item has no estimate. The same
        limits as a labelled table: ``effect_interval_frame``."""
        self._check_fitted()
        eff = self.effects_
        low, high = interval(eff["ate"].to_numpy(float), eff["se"].to_numpy(float),
                             self.alpha if alpha is None else alpha, eff["dof"].to_numpy(float))
        return np.asarray(low, dtype=float), np.asarray(high, dtype=float)

    def effect_interval_frame(self, alpha: float | None = None) -> pd.DataFrame:
        """``effect_interval`` as a table ``ci_low, ci_high`` indexed like ``effect()``."""
        low, high = self.effect_interval(alpha)
        index = self.effects_.set_index(self._keys()).index
        return pd.DataFrame({"ci_low": low, "ci_high": high}, index=index)

    def summary_frame(self, alpha: float | None = None) -> pd.DataFrame:
        """The effects table with intervals at level 1 - alpha."""
        self._check_fitted()
        frame = self.effects_.copy()
        frame["ci_low"], frame["ci_high"] = self.effect_interval(alpha)
        return frame

    def ate(self, alpha: float | None = None) -> pd.Series:
        """The overall effect: the row-weighted mean of the ``ok`` items' effects, i.e. the
        average effect of recommending over all opportunities (rows) of the items that could
        be estimated (the other items' rows are not in it: their effects are unknown).

        Its standard error combines the items' standard errors, ``sqrt(sum w_k^2 se_k^2)``
        with ``w_k = n_k / sum n``: items' influence functions live on disjoint rows, so
        their sum's variance is the sum of theirs. The interval is Student t with the
        Welch-Satterthwaite degrees of freedom of that sum (normal when every item's is).
        Returns ate, se, ci_low, ci_high, p_value, dof, n_items, n (rows).
        """
        self._check_fitted()
        ok = self.effects_[self.effects_["status"] == "ok"]
        weight = ok["n"].to_numpy(float) / max(float(ok["n"].sum()), 1.0)
        part = weight ** 2 * ok["se"].to_numpy(float) ** 2  # each item's share of the variance
        estimate = float(weight @ ok["ate"].to_numpy(float)) if len(ok) else np.nan
        se = float(np.sqrt(part.sum())) if len(ok) else np.nan
        item_dof = ok["dof"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            dof = float(part.sum() ** 2 / np.sum(np.where(np.isfinite(item_dof),
                                                          part ** 2 / item_dof, 0.0)))
        dof = dof if np.isfinite(dof) else np.nan  # NaN: normal
        low, high = interval(estimate, se, self.alpha if alpha is None else alpha, dof)
        return pd.Series({"ate": estimate, "se": se, "ci_low": float(low), "ci_high": float(high),
                          "p_value": float(p_value(estimate, se, dof)), "dof": dof,
                          "n_items": len(ok), "n": int(ok["n"].sum())}, name="ate")

    def summary(self, top: int = 10) -> EffectSummary:
        self._check_fitted()
        return EffectSummary(self, top=top)

    def nuisance_quality(self) -> pd.DataFrame:
        """Out-of-fold loss of each nuisance model next to the item-mean model's (see
        ``causalrec.estimate.diagnostics``)."""
        from .diagnostics import nuisance_quality
        return nuisance_quality(self)

    def covariate_balance(self) -> pd.DataFrame:
        """Per item and confounder, the standardised mean difference between the arms before
        and after weighting by the fitted propensities (see
        ``causalrec.estimate.diagnostics.covariate_balance``)."""
        from .diagnostics import covariate_balance
        return covariate_balance(self)

    def _keys(self):
        return ["item"] + list(self.effects_.columns[1:len(self.segments_.columns)])
