"""Repeated cross-fitting: each split (its own folds, its own out-of-fold predictions) gives
its own per-item effects table; the tables are combined into one (Chernozhukov et al. 2018,
section 3.4, as DoubleML's ``n_rep``: the estimates averaged over splits; the variance that of
an average of splits, see ``combine_splits``). Used by the local estimator and by the Spark
shards, so both combine the splits the same way."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..inference import interval, p_value

__all__ = ["combine_splits", "split_noise_sums", "SplitAverage"]

# How each column is combined: the estimate and its variance as below; the overlap
# diagnostics as their mean over the splits (``post_status`` then judges the average split:
# requiring every split to pass dropped 5-21% of the items, session 8), ranges as their union.
_MEAN = ("mu0_mean", "ess_treated", "ess_control", "n_clipped", "n_trimmed", "share_clipped",
         "share_outside_support", "e_min_treated", "e_max_treated", "e_min_control",
         "e_max_control")


def combine_splits(tables: list[pd.DataFrame], alpha: float) -> pd.DataFrame:
    """One per-item table from the per-split ``effects_table`` tables (same items, same
    order). The estimate is the mean of the splits' estimates (the mean rather than DoubleML's
    default median: with a few splits it removes more of the split noise). Its variance is
    that of an average of S splits: the splits' mean variance (the sampling variance each
    split's influence values measure, common to all splits: same rows) plus the split noise
    left in the average, var_between / S (var_between: the splits' estimates' variance,
    ddof 1). DoubleML's mean of var_s + (ate_s - ate)^2 charges an S-split average the noise of
    a single split, (S - 1) / S var_between: with S = 2 the two agree; with 4 splits it made
    IHDP intervals 4-10% wider (benchmarks/README.md, "Intervals, small items and seeds").
    Degrees of freedom: the mean of the splits'; intervals and p-values from those.
    ``split_sd`` is the standard deviation of the splits' estimates (NaN with one split): the
    split-to-split noise. The columns that depend on the data alone (naive means, outcome
    spread) are equal across splits. A single table gets only ``split_sd``."""
    if len(tables) == 1:
        return tables[0].assign(split_sd=np.nan)
    stack = lambda col: np.stack([t[col].to_numpy(dtype=np.float64) for t in tables])
    out = tables[0].copy()
    splits = stack("ate")
    ate = splits.mean(axis=0)
    split_var = splits.var(axis=0, ddof=1)
    se = np.sqrt((stack("se") ** 2).mean(axis=0) + split_var / len(tables))
    dof = stack("dof").mean(axis=0)
    ci_low, ci_high = interval(ate, se, alpha, dof)
    out["ate"], out["se"], out["dof"] = ate, se, dof
    out["ci_low"], out["ci_high"], out["p_value"] = ci_low, ci_high, p_value(ate, se, dof)
    for col in _MEAN:
        mean = stack(col).mean(axis=0)
        out[col] = np.rint(mean).astype(out[col].dtype) if out[col].dtype.kind == "i" else mean
    out["e_min"], out["e_max"] = stack("e_min").min(axis=0), stack("e_max").max(axis=0)
    out["split_sd"] = np.sqrt(split_var)
    return out


def split_noise_sums(tables: list[pd.DataFrame]) -> np.ndarray:
    """[sum over items of min(1, split variance / mean squared SE), items counted] of the
    items with a finite estimate and a positive SE in every split (two or more splits): the
    pieces of the split-noise share (their ratio) that ``n_repeats="auto"`` reads, summed
    over shards by the reducer first. Each item's ratio is capped at 1 (split noise as large
    as the SE itself) so that one item without overlap cannot buy every split."""
    ate = np.stack([t["ate"].to_numpy(dtype=np.float64) for t in tables])
    se2 = np.stack([t["se"].to_numpy(dtype=np.float64) for t in tables]) ** 2
    usable = np.isfinite(ate).all(axis=0) & np.isfinite(se2).all(axis=0) & (se2 > 0).all(axis=0)
    if len(tables) < 2 or not usable.any():
        return np.zeros(2)
    ratio = ate[:, usable].var(axis=0, ddof=1) / se2[:, usable].mean(axis=0)
    return np.array([np.minimum(ratio, 1.0).sum(), float(usable.sum())])


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
