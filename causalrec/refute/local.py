"""The refutation checks' rows in a pandas DataFrame: each row keeps its segment (item and
``by``) and cross-fitting fold, and one numpy generator makes every random draw."""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import pandas as pd

__all__ = ["LocalRefutationRows", "permute_within", "subsample_within"]


class _Changed(NamedTuple):
    """Changed rows and the original folds of those rows."""

    df: pd.DataFrame
    folds: np.ndarray


class LocalRefutationRows:
    """The log ``df`` (text already numeric), its ``treatment`` and numeric ``confounders``,
    each row's ``segment`` and ``folds``, the generator ``rng``, and ``estimate(data, *,
    folds, [confounders], [propensity])`` (effects per item; ``folds=None``: drawn anew)."""

    def __init__(self, df, *, treatment: str, confounders: list, segment: np.ndarray,
                 folds: np.ndarray, rng: np.random.Generator, estimate: Callable):
        self.df, self.treatment, self.confounders = df, treatment, confounders
        self.segment, self.folds, self.rng, self._estimate = segment, folds, rng, estimate

    def estimate(self, changed: _Changed | None = None, *, confounders=None,
                 drop_propensity: bool = False, same_folds: bool = True) -> pd.DataFrame:
        """Effects on ``changed`` rows (default the original ones), with other confounders if
        given, without the logged propensity if asked; ``same_folds=False`` lets the
        estimator draw the folds."""
        df, folds = changed or (self.df, self.folds)
        options = dict(folds=folds if same_folds else None)
        if confounders is not None:
            options["confounders"] = confounders
        if drop_propensity:
            options["propensity"] = None
        return self._estimate(df, **options)

    def permuted(self, column: str) -> _Changed:
        values = permute_within(self.df[column].to_numpy(), self.segment, self.rng)
        return _Changed(self.df.assign(**{column: values}), self.folds)

    def with_noise(self, column: str) -> _Changed:
        return _Changed(self.df.assign(**{column: self.rng.standard_normal(len(self.df))}),
                        self.folds)

    def subsample(self, fraction: float) -> _Changed:
        keep = subsample_within(self.segment, fraction, self.rng)
        return _Changed(self.df[keep], self.folds[keep])


def permute_within(values: np.ndarray, segment: np.ndarray, rng) -> np.ndarray:
    """Shuffle values within each segment (each segment keeps its own multiset)."""
    by_segment = np.argsort(segment, kind="stable")
    shuffled = np.lexsort((rng.random(len(values)), segment))
    out = np.empty_like(values)
    out[shuffled] = values[by_segment]
    return out


def subsample_within(segment: np.ndarray, fraction: float, rng) -> np.ndarray:
    """A random ``fraction`` of every segment's rows (rounded), as a boolean mask."""
    order = np.lexsort((rng.random(len(segment)), segment))
    counts = np.bincount(segment)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(segment)) - starts[segment[order]]
    keep = np.zeros(len(segment), dtype=bool)
    keep[order] = rank < np.round(fraction * counts)[segment[order]]
    return keep
