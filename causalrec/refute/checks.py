"""Refutation checks, one object each with the same interface: ``refute(run)`` re-estimates
every item on changed data (one batched estimator call per replicate) and ``passes(rows,
alpha)`` is its pass rule on the tidy rows (``p_value``, ``shift_in_se``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from ..inference import critical_value

__all__ = ["PlaceboTreatment", "RandomCommonCause", "DataSubsets", "RefutationRun"]

RANDOM_COMMON_CAUSE = "_random_common_cause"


@dataclass
class RefutationRun:
    """What every check works on: the log, its treatment and confounder columns, each row's
    segment (item and ``by``) and cross-fitting fold, the shared random generator, and
    ``estimate(data, *, confounders=..., propensity=..., folds=...)`` (effects per item)."""

    df: pd.DataFrame
    treatment: str
    confounders: list
    segment: np.ndarray
    folds: np.ndarray
    rng: np.random.Generator
    estimate: Callable


class PlaceboTreatment:
    """The treatment permuted within each segment: the true effect is zero, so ``passed``
    means not significant at ``alpha`` (about ``alpha`` of the items should fail). A logged
    propensity does not describe the permuted treatment, so it is not used."""

    name = "placebo"

    def refute(self, run: RefutationRun) -> list[pd.DataFrame]:
        values = _permute_within(run.df[run.treatment].to_numpy(), run.segment, run.rng)
        return [run.estimate(run.df.assign(**{run.treatment: values}), propensity=None)]

    def passes(self, rows: pd.DataFrame, alpha: float) -> np.ndarray:
        return (rows["p_value"] >= alpha).to_numpy()


class RandomCommonCause:
    """An independent N(0, 1) column added as a confounder, the original folds kept (only the
    column can move anything): ``passed`` means a shift of at most ``tolerance`` SEs."""

    name = "random_common_cause"

    def __init__(self, tolerance: float = 1.0):
        self.tolerance = tolerance

    def refute(self, run: RefutationRun) -> list[pd.DataFrame]:
        noisy = run.df.assign(**{RANDOM_COMMON_CAUSE: run.rng.standard_normal(len(run.df))})
        return [run.estimate(noisy, confounders=run.confounders + [RANDOM_COMMON_CAUSE],
                             folds=run.folds)]

    def passes(self, rows: pd.DataFrame, alpha: float) -> np.ndarray:
        return (rows["shift_in_se"].abs() <= self.tolerance).to_numpy()


class DataSubsets:
    """``n_subsets`` re-estimates on a random ``fraction`` of every segment's rows (each row
    keeps its fold). A subsample estimate differs from the full one with standard deviation
    about ``se * sqrt((1 - f) / f)``: ``passed`` means within ``z_{1-alpha/2}`` of those."""

    name = "subset"

    def __init__(self, n_subsets: int = 5, fraction: float = 0.8):
        self.n_subsets, self.fraction = n_subsets, fraction

    def refute(self, run: RefutationRun) -> list[pd.DataFrame]:
        out = []
        for _ in range(int(self.n_subsets)):
            keep = _subsample_within(run.segment, self.fraction, run.rng)
            out.append(run.estimate(run.df[keep], folds=run.folds[keep]))
        return out

    def passes(self, rows: pd.DataFrame, alpha: float) -> np.ndarray:
        z = critical_value(alpha)
        limit = z * np.sqrt((1 - self.fraction) / self.fraction)
        return (rows["shift_in_se"].abs() <= limit).to_numpy()


def _permute_within(values: np.ndarray, segment: np.ndarray, rng) -> np.ndarray:
    """Shuffle values within each segment (each segment keeps its own multiset)."""
    by_segment = np.argsort(segment, kind="stable")
    shuffled = np.lexsort((rng.random(len(values)), segment))
    out = np.empty_like(values)
    out[shuffled] = values[by_segment]
    return out


def _subsample_within(segment: np.ndarray, fraction: float, rng) -> np.ndarray:
    """A random ``fraction`` of every segment's rows (rounded), as a boolean mask."""
    order = np.lexsort((rng.random(len(segment)), segment))
    counts = np.bincount(segment)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(segment)) - starts[segment[order]]
    keep = np.zeros(len(segment), dtype=bool)
    keep[order] = rank < np.round(fraction * counts)[segment[order]]
    return keep
