"""Repeated cross-fitting: each split (its own folds, its own out-of-fold predictions) gives
its own per-item effects table; the tables are combined into one (Chernozhukov et al. 2018,
section 3.4: the estimates averaged over splits). Used by the local estimator and by the
Spark shards, so both combine the splits the same way."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..inference import interval, p_value

__all__ = ["combine_splits", "SplitAverage", "SPLIT_VARIANCES"]

# "mean": the mean of the splits' variances; "dml": the mean of var_s + (ate_s - ate)^2
# (the mean-aggregated DML variance, which adds the splits' spread)
SPLIT_VARIANCES = ("mean", "dml")

# How each diagnostic column is combined. The overlap diagnostics take the worst split, so
# ``post_status`` on the combined table flags an item when any split would flag it: an item
# is "ok" only if it is "ok" in every split.
_WORST_LOW = ("ess_treated", "ess_control", "e_min")
_WORST_HIGH = ("e_max", "n_clipped", "n_trimmed", "share_clipped", "share_outside_support")
_MEAN = ("mu0_mean",)
_SUPPORT = ("e_min_treated", "e_max_treated", "e_min_control", "e_max_control")
_RECOMPUTED = ("ate", "se", "ci_low", "ci_high", "p_value", "dof")


def combine_splits(tables: list[pd.DataFrame], alpha: float,
                   variance: str = "mean") -> pd.DataFrame:
    """One per-item table from the per-split ``effects_table`` tables (same items, same
    order). The estimate is the mean of the splits' estimates, its variance the mean of their
    variances (``variance="mean"``) or of var_s + (ate_s - ate)^2 (``"dml"``), its degrees of
    freedom the mean of theirs; intervals and p-values from those. The columns that depend
    on the data alone (naive means, outcome spread) are equal across splits. A single table
    is returned as it is."""
    if variance not in SPLIT_VARIANCES:
        raise ValueError(f"variance must be one of {SPLIT_VARIANCES}, got {variance!r}")
    if len(tables) == 1:
        return tables[0]
    stack = lambda col: np.stack([t[col].to_numpy(dtype=np.float64) for t in tables])
    out = tables[0].copy()
    ates = stack("ate")
    ate = ates.mean(axis=0)
    var = stack("se") ** 2
    if variance == "dml":
        var = var + (ates - ate) ** 2
    se, dof = np.sqrt(var.mean(axis=0)), stack("dof").mean(axis=0)
    ci_low, ci_high = interval(ate, se, alpha, dof)
    out["ate"], out["se"], out["dof"] = ate, se, dof
    out["ci_low"], out["ci_high"], out["p_value"] = ci_low, ci_high, p_value(ate, se, dof)
    for col in _WORST_LOW:
        out[col] = np.min(stack(col), axis=0)
    for col in _WORST_HIGH:
        out[col] = np.max(stack(col), axis=0).astype(out[col].dtype)
    for col in _MEAN:
        out[col] = stack(col).mean(axis=0)
    # the arms' propensity ranges from the split where they overlap least (disjoint there
    # -> disjoint here); NaN for items without rows
    gap = np.maximum(stack("e_min_treated") - stack("e_max_control"),
                     stack("e_min_control") - stack("e_max_treated"))
    worst = np.argmax(np.nan_to_num(gap, nan=-np.inf), axis=0)
    pick = np.arange(len(out))
    for col in _SUPPORT:
        out[col] = stack(col)[worst, pick]
    return out


class SplitAverage:
    """Collects each split's ``effects_table`` output and its predictions (rows in the same
    order in every split); ``result()`` gives the combined table and the row outputs
    averaged over the splits: psi (its item means are the combined estimates), the clipped
    and the fitted propensities and the outcome predictions (each split's are out of fold,
    so their mean is too). One split: its own outputs, unchanged."""

    def __init__(self, alpha: float, variance: str = "mean"):
        self.alpha, self.variance = alpha, variance
        self.tables, self.sums = [], None

    def add(self, table, psi, e_clipped, e, mu0, mu1) -> None:
        rows = [psi, e_clipped, e, mu0, mu1]
        self.tables.append(table)
        self.sums = rows if self.sums is None else [a + r for a, r in zip(self.sums, rows)]

    def result(self):
        n = len(self.tables)
        rows = self.sums if n == 1 else [s / n for s in self.sums]
        return (combine_splits(self.tables, self.alpha, self.variance), *rows)
