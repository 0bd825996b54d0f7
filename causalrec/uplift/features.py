"""User features of the second stage: numeric, one-hot categorical and text columns, encoded
and standardised with the levels and moments learnt on the training log, so that any users
frame is scored on the same scale."""
from __future__ import annotations

import numpy as np
import pandas as pd

import warnings

from ..estimate.design import DesignSpec
from ..estimate.missing_values import fill_of, indicator_name
from ..exceptions import DataWarning
from ..schema import (MISSING_REMEDY, SchemaError, _as_list, _check_finite_numeric,
                      check_key_values)
from ..utils.frames import check_frame
from ..utils.levels import frequency_order, reference_first

__all__ = ["UserFeatures", "level_counts"]


class UserFeatures:
    """Encoder of user feature columns into a standardised matrix.

    Parameters
    ----------
    features : numeric columns. categorical : columns one-hot encoded (reference coding:
        the most frequent level of the training data, ties by label, is the baseline, as
        in the estimator's design; levels beyond the ``max_levels`` most frequent are pooled
        into it; a missing value is a level of its
        own, ``MISSING``). text : free-text columns, embedded and reduced to
        ``text_components`` principal components (embeddings come from the on-disk cache
        that the nuisance fits filled). Constant columns are dropped.
    unknown_levels : what ``transform`` does with a categorical value never seen in training
        (a missing value counts as one unless training had missing values): "error" (default)
        raises a ``SchemaError`` naming the column and the levels; "reference" scores those
        rows as the reference level and warns (``DataWarning``) with their count.
    missing : the log's missing-value policy (``InteractionLog``) for the numeric features:
        "error" (default): a missing value is bad input; "indicator": as the design does
        with a confounder, a feature's missing values take its fill (the median of its
        observed training values) and a feature with missing training values adds its 0/1
        column ``indicator_name(col)`` right after its own; both are fixed at fit
        (``missing_``, a ``DesignSpec`` holding them) and reused on any users frame.

    Attributes
    ----------
    columns_ : names of the encoded columns; center_, scale_ : standardisation moments.
    missing_ : the fill and indicators of the numeric features (``DesignSpec.fill``,
        ``DesignSpec.indicators``; empty under "error").
    """

    def __init__(self, features=(), categorical=(), text=(), text_encoder=None,
                 text_components=8, max_levels=50, unknown_levels="error", missing="error"):
        self.features = _as_list(features)
        self.categorical = _as_list(categorical)
        self.text = _as_list(text)
        self.text_encoder = text_encoder
        self.text_components = text_components
        self.max_levels = max_levels
        self.unknown_levels = unknown_levels
        self.missing = missing

    @property
    def input_columns(self) -> list[str]:
        return self.features + self.categorical + self.text

    def fit_transform(self, frame: pd.DataFrame) -> np.ndarray:
        self.check(frame, "log")
        self.fit_levels({col: level_counts(frame[col]) for col in self.categorical})
        fill, indicators = {}, []
        if self.missing == "indicator":  # DesignSpec.from_log's rule, on every row
            for col in self.features:
                fill[col], missing = fill_of(frame[col].to_numpy(dtype=np.float64,
                                                                  na_value=np.nan))
                if missing.any():
                    indicators.append(col)
        self.fit_missing(fill, indicators)
        self.text_ = None
        if self.text:
            from ..confounders import TextConfounders
            self.text_ = TextConfounders(encoder=self.text_encoder,
                                         n_components=self.text_components,
                                         pair_similarity=False)
            self.text_.fit(frame, self.text)
        raw, names = self.raw(frame)
        self.fit_moments(raw.mean(0), raw.std(0), names)
        return self.encode(frame, raw)

    def fit_levels(self, counts: dict) -> None:
        """Levels from each categorical column's level counts (any order): the ``max_levels``
        most frequent, ties by label, the most frequent first (the reference, so that
        renaming a level cannot change which one the penalised coefficients shrink towards)
        and the others sorted."""
        self.levels_, self.seen_levels_ = {}, {}
        for col in self.categorical:
            count = counts[col]
            top = frequency_order(count.index, count.to_numpy())[:self.max_levels]
            self.levels_[col] = reference_first(count.index[top], count.to_numpy()[top])
            self.seen_levels_[col] = pd.Index(count.index)

    def fit_missing(self, fill: dict, indicators: list) -> None:
        """The numeric features' fill (column -> value) and the columns with an indicator,
        held as the design holds a confounder's (``DesignSpec.numeric``, ``is_missing``)."""
        self.missing_ = DesignSpec(list(self.features), {}, [], [], np.empty(0), np.empty(0),
                                   fill=dict(fill), indicators=list(indicators))

    def fit_moments(self, mean: np.ndarray, std: np.ndarray, names: list[str]) -> None:
        """Standardisation from the raw columns' mean and (population) standard deviation;
        constant columns are dropped."""
        keep = std > 1e-12 * np.maximum(1.0, np.abs(mean))
        self.keep_, self.center_, self.scale_ = keep, mean[keep], 1.0 / std[keep]
        self.columns_ = [n for n, k in zip(names, keep) if k]

    def encode(self, frame: pd.DataFrame, raw: np.ndarray | None = None) -> np.ndarray:
        """The standardised matrix of rows already checked (the fit's own rows)."""
        raw = self.raw(frame)[0] if raw is None else raw
        return (raw[:, self.keep_] - self.center_) * self.scale_

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "keep_"):
            raise RuntimeError("UserFeatures is not fitted: call fit_transform first")
        self.check(frame, "users frame")
        for col in self.categorical:
            self._check_levels(frame[col], col)
        return self.encode(frame)

    def check(self, frame: pd.DataFrame, what: str) -> None:
        check_frame(frame, f"the {what}", self.input_columns)
        for col in self.features:
            _check_finite_numeric(frame[col], col, allow_missing=self.missing == "indicator",
                                  remedy=MISSING_REMEDY if what == "log" else None)
        for col in self.categorical:
            check_key_values(frame[col], col)

    def _check_levels(self, values: pd.Series, col: str) -> None:
        """Apply the ``unknown_levels`` policy to levels never seen in training."""
        levels = _levels(values)
        unseen = ~levels.isin(self.seen_levels_[col])
        if not unseen.any():
            return
        shown = ", ".join(repr(v) for v in pd.unique(levels[unseen])[:5])
        if self.unknown_levels == "error":
            raise SchemaError(col, f"{int(unseen.sum())} rows hold level(s) not seen in training: "
                              f"{shown} (a missing value is the level {MISSING!r}); map them to "
                              "known levels, or pass unknown_levels='reference' to score them as "
                              f"the reference level {self.levels_[col][0]!r}")
        warnings.warn(DataWarning(
            f"column {col!r}: {int(unseen.sum())} rows hold level(s) not seen in training "
            f"({shown}); scored as the reference level {self.levels_[col][0]!r}"), stacklevel=4)

    def raw(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """The unstandardised columns (numeric, each with its indicator if it has one,
        one-hot, text components) and their names."""
        parts, names, spec = [], [], self.missing_
        for col in self.features:  # missing values filled, as the design reads a confounder
            parts.append(spec.numeric(frame[col], col).astype(np.float64)[:, None])
            names.append(col)
            if col in spec.indicators:
                parts.append(spec.is_missing(frame[col]).astype(np.float64)[:, None])
                names.append(indicator_name(col))
        for col in self.categorical:
            levels = self.levels_[col]
            codes = pd.Categorical(_levels(frame[col]), categories=levels).codes
            onehot = codes[:, None] == np.arange(1, len(levels))[None, :]  # reference coding
            parts.append(onehot.astype(np.float64))
            names += [f"{col}={level}" for level in levels[1:]]
        if self.text_ is not None:
            scores = self.text_.transform(frame)
            parts.append(scores.to_numpy(dtype=np.float64))
            names += list(scores.columns)
        if not parts:
            return np.zeros((len(frame), 0)), []
        return np.concatenate(parts, axis=1), names


MISSING = "<missing>"


def level_counts(values: pd.Series) -> pd.Series:
    """Rows per level (``MISSING`` for missing values), most frequent first."""
    return _levels(values).value_counts()


def _levels(values: pd.Series) -> pd.Series:
    """Category levels as text, missing values (None, NaN, NA) as the level ``MISSING``."""
    return values.astype(object).where(values.notna(), MISSING).map(str)
