"""User features of the second stage: numeric, one-hot categorical and text columns, encoded
and standardised with the levels and moments learnt on the training log, so that any users
frame is scored on the same scale."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..schema import SchemaError, _as_list, _check_finite_numeric

__all__ = ["UserFeatures"]


class UserFeatures:
    """Encoder of user feature columns into a standardised matrix.

    Parameters
    ----------
    features : numeric columns. categorical : columns one-hot encoded (reference coding:
        the first level of the training data is the baseline; a level unseen in training
        counts as the baseline). text : free-text columns, embedded and reduced to
        ``text_components`` principal components (embeddings come from the on-disk cache
        that the nuisance fits filled). Constant columns are dropped.

    Attributes
    ----------
    columns_ : names of the encoded columns; center_, scale_ : standardisation moments.
    """

    def __init__(self, features=(), categorical=(), text=(), text_encoder=None,
                 text_components=8, max_levels=50):
        self.features = _as_list(features)
        self.categorical = _as_list(categorical)
        self.text = _as_list(text)
        self.text_encoder = text_encoder
        self.text_components = text_components
        self.max_levels = max_levels

    @property
    def input_columns(self) -> list[str]:
        return self.features + self.categorical + self.text

    def fit_transform(self, frame: pd.DataFrame) -> np.ndarray:
        self._check(frame, "log")
        self.levels_ = {}
        for col in self.categorical:
            counts = frame[col].astype(str).value_counts()
            self.levels_[col] = sorted(counts.index[:self.max_levels])
        self.text_ = None
        if self.text:
            from ..confounders import TextConfounders
            self.text_ = TextConfounders(encoder=self.text_encoder,
                                         n_components=self.text_components,
                                         pair_similarity=False)
            self.text_.fit(frame, self.text)
        raw, names = self._raw(frame)
        mean, std = raw.mean(0), raw.std(0)
        keep = std > 1e-12 * np.maximum(1.0, np.abs(mean))
        self.keep_, self.center_, self.scale_ = keep, mean[keep], 1.0 / std[keep]
        self.columns_ = [n for n, k in zip(names, keep) if k]
        return (raw[:, keep] - self.center_) * self.scale_

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "keep_"):
            raise RuntimeError("UserFeatures is not fitted: call fit_transform first")
        self._check(frame, "users frame")
        raw, _ = self._raw(frame)
        return (raw[:, self.keep_] - self.center_) * self.scale_

    def _check(self, frame: pd.DataFrame, what: str) -> None:
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame of users, got {type(frame).__name__}")
        for col in self.input_columns:
            if col not in frame.columns:
                raise SchemaError(col, f"feature column missing from the {what}")
        for col in self.features:
            _check_finite_numeric(frame[col], col)

    def _raw(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        parts = [frame[self.features].to_numpy(dtype=np.float64)] if self.features else []
        names = list(self.features)
        for col in self.categorical:
            levels = self.levels_[col]
            codes = pd.Categorical(frame[col].astype(str), categories=levels).codes
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
