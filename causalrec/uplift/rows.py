"""Where the uplift model's rows live: the row work of ``UpliftModel.fit`` behind one small
interface, so the second stage is one sequence of steps whatever holds the rows.

A backend (``LocalUpliftRows`` here, ``causalrec.spark.uplift.SparkUpliftRows`` on Spark)
has, called in this order:

* ``check(model)``: the roles (one item column: sets ``model.item_column_``) and the
  encoder's columns, before the costly stage 1; ``device``: where blocks' sums are made;
* ``stage1(model)``: validates the log and fits the stage-1 ``ItemEffectEstimator``;
  returns ``(estimator, effects, items)`` (items: the item labels, sorted);
* ``fit_encoder(encoder)``: fits the ``UserFeatures`` encoder on every row of the log;
* ``reduce(fn)``: ``fn(block)`` summed over blocks of the used rows (a tuple of arrays or
  tensors, summed elementwise); a ``Block`` holds the rows' encoded features ``Z``,
  pseudo-outcome ``g``, doubly robust outcome under recommendation ``g1``, item code, fold
  and ``key`` (an integer naming the row: its position
  in the pandas log, the ``row_id`` column on Spark; the bootstrap's weights are drawn from it);
* ``pseudo_outcomes()``: the per-row pseudo-outcomes (NaN on rows not used).

Every sum the second stage needs (moments, meats, bootstrap draws) goes through ``reduce``,
so on Spark only those small per-item tables reach the driver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..estimate.design import segment_ids
from ..estimate.estimator import ItemEffectEstimator, resolve_device

__all__ = ["Block", "LocalUpliftRows", "dr_outcomes", "pseudo_outcomes", "stage1_options",
           "sum_parts"]


@dataclass
class Block:
    Z: np.ndarray      # (n, d) standardised user features
    g: np.ndarray      # (n,) pseudo-outcomes (finite)
    item: np.ndarray   # (n,) item codes (positions in the model's items_)
    fold: np.ndarray   # (n,) cross-fitting fold of stage 1
    key: np.ndarray    # (n,) row keys (int64)
    g1: np.ndarray     # (n,) doubly robust outcomes under recommendation (the response model's)


def dr_outcomes(t, y, e, mu0, mu1):
    """Doubly robust outcomes per row with the item recommended (G1) and without (G0): their
    means over rows are AIPW estimates of the mean outcome under either arm."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return mu1 + t * (y - mu1) / e, mu0 + (1 - t) * (y - mu0) / (1 - e)


def pseudo_outcomes(t, y, e, mu0, mu1) -> np.ndarray:
    """Doubly robust pseudo-outcome G1 - G0 per row (its mean over an item is the item's
    AIPW ATE)."""
    g1, g0 = dr_outcomes(t, y, e, mu0, mu1)
    return g1 - g0


def stage1_options(options: dict) -> dict:
    """The stage-1 estimator's options: every nuisance prediction out of fold unless the caller
    says otherwise (a small log's all-rows refit would let a row's pseudo-outcome, and the
    policy values, use models that saw its outcome)."""
    return {"refit_small_logs": False, **options}


def sum_parts(parts):
    """Elementwise sum of tuples of arrays / tensors (one tuple per block)."""
    parts = list(parts)
    total = list(parts[0])
    for part in parts[1:]:
        total = [a + b for a, b in zip(total, part)]
    return tuple(total)


class LocalUpliftRows:
    """The uplift model's rows in an ``InteractionLog`` of a pandas DataFrame: one block."""

    def __init__(self, log):
        self.log = log

    @property
    def missing(self) -> str:
        """The log's missing-value policy: the features follow it."""
        return self.log.missing

    def check(self, model) -> None:
        if len(self.log.item_columns) != 1:
            raise ValueError(f"UpliftModel needs one item column, got {self.log.item_columns}")
        model.item_column_ = self.log.item_columns[0]
        model.encoder_.check(self.log.data, "log")

    def stage1(self, model):
        self.df = self.log.data
        est = ItemEffectEstimator(**stage1_options(model.estimator_options)).fit(self.log)
        self.device = resolve_device(est.device)  # the blocks' sums stay on the model's device
        self.item_codes, segments = segment_ids(self.df, [model.item_column_])
        self.g1, g0 = dr_outcomes(
            self.df[self.log.treatment].to_numpy(float), self.df[self.log.outcome].to_numpy(float),
            est.propensity_.to_numpy(), est.mu0_.to_numpy(), est.mu1_.to_numpy())
        self.g = self.g1 - g0
        self.fold = est.fold_.to_numpy()
        return est, est.effects_, segments[model.item_column_]

    def fit_encoder(self, encoder) -> None:
        use = np.isfinite(self.g)
        Z = encoder.fit_transform(self.df)[use]
        self.block = Block(Z, self.g[use], self.item_codes[use], self.fold[use],
                           np.flatnonzero(use).astype(np.int64), self.g1[use])

    def reduce(self, fn):
        return tuple(fn(self.block))

    def pseudo_outcomes(self) -> pd.Series:
        return pd.Series(np.where(np.isfinite(self.g), self.g, np.nan), index=self.df.index,
                         name="pseudo_outcome")

