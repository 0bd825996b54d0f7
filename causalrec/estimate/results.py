"""The per-item results contract of the effect estimator: ``effect``, ``effect_interval``,
``summary_frame`` and ``summary`` read its fitted ``effects_`` table (pandas in, pandas out)."""
from __future__ import annotations

import pandas as pd

from ..inference import interval
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

    def effect_interval(self, alpha: float | None = None) -> pd.DataFrame:
        """Confidence interval per item at level 1 - alpha (default: the estimator's alpha):
        Student t with the item's ``dof`` degrees of freedom (see ``causalrec.inference``)."""
        self._check_fitted()
        eff = self.effects_.set_index(self._keys())
        low, high = interval(eff["ate"], eff["se"], self.alpha if alpha is None else alpha,
                             eff["dof"].to_numpy(float))
        return pd.DataFrame({"ci_low": low, "ci_high": high})

    def summary_frame(self, alpha: float | None = None) -> pd.DataFrame:
        """The effects table with intervals at level 1 - alpha."""
        self._check_fitted()
        frame = self.effects_.copy()
        interval = self.effect_interval(alpha)
        frame["ci_low"], frame["ci_high"] = interval["ci_low"].to_numpy(), interval["ci_high"].to_numpy()
        return frame

    def summary(self, top: int = 10) -> EffectSummary:
        self._check_fitted()
        return EffectSummary(self, top=top)

    def nuisance_quality(self) -> pd.DataFrame:
        """Out-of-fold loss of each nuisance model next to the item-mean model's (see
        ``causalrec.estimate.diagnostics``)."""
        from .diagnostics import nuisance_quality
        return nuisance_quality(self)

    def _keys(self):
        return ["item"] + list(self.effects_.columns[1:len(self.segments_.columns)])
