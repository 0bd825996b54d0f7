"""Repeated cross-fitting: each split (its own folds, its own out-of-fold predictions) gives
its own per-item effects table; the tables are combined into one (Chernozhukov et al. 2018,
section 3.4, as DoubleML's ``n_rep``: the estimates averaged over splits, the variance the
mean of each split's variance plus its squared distance to the average). Used by the local
estimator and by the Spark shards, so both combine the splits the same way."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..inference import interval, p_value

__all__ = ["combine_splits", "SplitAverage"]

# How each column is combined: the estimate and its variance as below; the overlap
# diagnostics as their mean over the splits (``post_status`` then judges the average split:
# requiring every split to pass dropped 5-21% of the items, session 8), ranges as their union.
_MEAN = ("mu0_mean", "ess_treated", "ess_control", "n_clipped", "n_trimmed", "share_clipped",
         "share_outside_support", "e_min_treated", "e_max_treated", "e_min_control",
         "e_max_control")


def combine_splits(tables: list[pd.DataFrame], alpha: float) -> pd.DataFrame:
    """One per-item table from the per-split ``effects_table`` tables (same items, same
    order). The estimate is the mean of the splits' estimates (the mean rather than DoubleML's
    default median: with a few splits it removes more of the split noise), its variance the
    mean over splits of var_s + (ate_s - ate)^2 (so a split-sensitive item's interval
    widens by its spread), its degrees of freedom the mean of theirs; intervals and p-values
    from those. ``split_sd`` is the standard deviation of the splits' estimates (NaN with one
    split): the split-to-split noise. The columns that depend on the data alone (naive
    means, outcome spread) are equal across splits. A single table gets only ``split_sd``."""
    if len(tables) == 1:
        return tables[0].assign(split_sd=np.nan)
    stack = lambda col: np.stack([t[col].to_numpy(dtype=np.float64) for t in tables])
    out = tables[0].copy()
    splits = stack("ate")
    ate = splits.mean(axis=0)
    se = np.sqrt((stack("se") ** 2 + (splits - ate) ** 2).mean(axis=0))
    dof = stack("dof").mean(axis=0)
    ci_low, ci_high = interval(ate, se, alpha, dof)
    out["ate"], out["se"], out["dof"] = ate, se, dof
    out["ci_low"], out["ci_high"], out["p_value"] = ci_low, ci_high, p_value(ate, se, dof)
    for col in _MEAN:
        mean = stack(col).mean(axis=0)
        out[col] = np.rint(mean).astype(out[col].dtype) if out[col].dtype.kind == "i" else mean
    out["e_min"], out["e_max"] = stack("e_min").min(axis=0), stack("e_max").max(axis=0)
    out["split_sd"] = splits.std(axis=0, ddof=1)
    return out


class SplitAverage:
    """Collects each split's ``effects_table`` output and its predictions (rows in the same
    order in every split); ``result()`` gives the combined table and the row outputs
    averaged over the splits: psi (its item means are the combined estimates), the clipped
    and the fitted propensities and the outcome predictions (each split's are out of fold,
    so their mean is too). One split: its own outputs, unchanged."""

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.tables, self.sums = [], None

    def add(self, table, psi, e_clipped, e, mu0, mu1) -> None:
        rows = [psi, e_clipped, e, mu0, mu1]
        self.tables.append(table)
        if self.sums is None:
            self.sums = rows
        elif len(self.tables) == 2:  # fresh sums: the first split's arrays may be one object
            self.sums = [a + r for a, r in zip(self.sums, rows)]  # (e_clipped is e, no clip)
        else:  # in place: no second set of row arrays beside the sums (memory at 10M rows)
            for a, r in zip(self.sums, rows):
                a += r

    def result(self):
        n = len(self.tables)
        rows = self.sums if n == 1 else [s / n for s in self.sums]
        return (combine_splits(self.tables, self.alpha), *rows)
