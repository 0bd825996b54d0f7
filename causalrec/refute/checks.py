"""Refutation checks, one class each (as DoWhy's refuters), with the same interface:
``refute(rows)`` re-estimates every item on changed rows (one batched estimator call per
replicate) and ``passes(table, alpha)`` is the check's pass rule on the tidy rows
(``p_value``, ``shift_in_se``).

The rows are a backend (``causalrec.refute.local.LocalRefutationRows`` in this process,
``causalrec.spark.refute.SparkRefutationRows`` on Spark) that changes them in its own way
and estimates on the result: ``permuted(column)``, ``with_noise(column)``,
``subsample(fraction)``, each returning changed rows for ``estimate(changed, *,
confounders=None, drop_propensity=False, same_folds=True)``, and ``treatment`` and
``confounders`` (the numeric confounder columns).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from ..inference import critical_value
from ..schema import _as_list

__all__ = ["PlaceboTreatment", "RandomCommonCause", "DataSubsets", "CHECKS", "choose_refuters",
           "RANDOM_COMMON_CAUSE"]

CHECKS = ("placebo", "random_common_cause", "subset")
RANDOM_COMMON_CAUSE = "_random_common_cause"


class PlaceboTreatment:
    """The treatment permuted within each segment: the true effect is zero, so ``passed``
    means not significant at ``alpha`` (about ``alpha`` of the items should fail). A logged
    propensity does not describe the permuted treatment, so it is not used."""

    name = "placebo"

    def refute(self, rows) -> list[pd.DataFrame]:
        return [rows.estimate(rows.permuted(rows.treatment), drop_propensity=True,
                              same_folds=False)]

    def passes(self, table: pd.DataFrame, alpha: float) -> np.ndarray:
        return (table["p_value"] >= alpha).to_numpy()


class RandomCommonCause:
    """An independent N(0, 1) column added as a confounder, the original folds kept (only the
    column can move anything): ``passed`` means a shift of at most ``tolerance`` SEs."""

    name = "random_common_cause"

    def __init__(self, tolerance: float = 1.0):
        self.tolerance = tolerance

    def refute(self, rows) -> list[pd.DataFrame]:
        return [rows.estimate(rows.with_noise(RANDOM_COMMON_CAUSE),
                              confounders=rows.confounders + [RANDOM_COMMON_CAUSE])]

    def passes(self, table: pd.DataFrame, alpha: float) -> np.ndarray:
        return (table["shift_in_se"].abs() <= self.tolerance).to_numpy()


class DataSubsets:
    """``n_subsets`` re-estimates on a random ``fraction`` of every segment's rows (each row
    keeps its fold). A subsample estimate differs from the full one with standard deviation
    about ``se * sqrt((1 - f) / f)``: ``passed`` means within ``z_{1-alpha/2}`` of those."""

    name = "subset"

    def __init__(self, n_subsets: int = 5, fraction: float = 0.8):
        self.n_subsets, self.fraction = n_subsets, fraction

    def refute(self, rows) -> list[pd.DataFrame]:
        return [rows.estimate(rows.subsample(self.fraction)) for _ in range(int(self.n_subsets))]

    def passes(self, table: pd.DataFrame, alpha: float) -> np.ndarray:
        z = critical_value(alpha)
        limit = z * np.sqrt((1 - self.fraction) / self.fraction)
        return (table["shift_in_se"].abs() <= limit).to_numpy()


def choose_refuters(checks=None, *, rcc_tolerance=1.0, n_subsets=5, subset_fraction=0.8):
    """The refuters named in ``checks`` (default all of ``CHECKS``), always in the order of
    ``CHECKS``: the local checks share one random generator."""
    chosen = CHECKS if checks is None else _as_list(checks)
    unknown = set(chosen) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; choose from {CHECKS}")
    return [refuter for refuter in (PlaceboTreatment(), RandomCommonCause(rcc_tolerance),
                                    DataSubsets(n_subsets, subset_fraction))
            if refuter.name in chosen]
