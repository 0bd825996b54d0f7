"""The summary of a fitted ``BanditEstimator`` (a ``causalrec.summary.Summary``)."""
from __future__ import annotations

from ..summary import Summary


class BanditSummary(Summary):
    """Header facts and the items with the highest estimated values."""

    title = "Item values from a bandit log"

    def __init__(self, est, top: int = 10):
        values = est.values_
        info = {
            "Method": est.method.upper(),
            "Outcome model": ("none" if est.outcome_coef_ is None else
                              f"pooled GLM by {est.outcome_segments}, {est.n_folds}-fold cross-fitted"),
            "Rows (impressions)": len(est._y),
            "Items": len(est.items_),
            "Positions": "-" if est.positions_ is None else len(est.positions_),
            "Logged mean outcome": f"{est._y.mean():.5g}",
            "Confidence level": f"{1 - est.alpha:.0%}",
        }
        cols = ["value", "se", "ci_low", "ci_high", "lift", "lift_se", "n_shown", "ess", "status"]
        super().__init__(info, values["status"].value_counts(),
                         values.nlargest(top, "value").set_index("item")[cols],
                         "Highest estimated values")
