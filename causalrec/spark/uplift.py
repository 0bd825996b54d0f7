"""``UpliftModel.fit`` on a Spark DataFrame: stage 1 by the Spark estimator (its per-row
propensity, mu0, mu1 and fold, keyed by a row id), then every sum of the second stage (the
encoder's level counts and moments, the ridge moments per (fold, item), the sandwich meat,
the bootstrap's per-(item, draw) moments) as one aggregation over partitions: only those
small tables reach the driver, which solves the ridge as the pandas fit does. The fitted
model equals the pandas fit on the same rows (same folds; sums up to summation order) when
``row_id`` names a column equal to the pandas rows' positions (the bootstrap draws its
weights from each row's key); with the default id the heterogeneity p-values are another
draw of the same bootstrap."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd

from ..estimate.estimator import ItemEffectEstimator
from ..uplift.features import level_counts
from ..uplift.rows import Block, dr_outcomes, pseudo_outcomes, stage1_options, sum_parts
from .driver import estimate_item_effects_spark
from .shard import ROW_ID
from .stage0 import _fills, _missing, validate

__all__ = ["SparkUpliftRows"]

_PAYLOAD_SCHEMA = "payload binary"


def _F():
    from pyspark.sql import functions as F
    return F


def _map_partitions(sdf, fn) -> list:
    """``fn(pdf)`` of each non-empty partition's rows (a pandas frame), pickled back."""
    def run(batches):
        frames = list(batches)
        pdf = pd.concat(frames, ignore_index=True) if frames else None
        if pdf is not None and len(pdf):
            yield pd.DataFrame({"payload": [pickle.dumps(fn(pdf))]})
    return [pickle.loads(row.payload) for row in sdf.mapInPandas(run, _PAYLOAD_SCHEMA).collect()]


class SparkUpliftRows:
    """The uplift model's rows in a Spark DataFrame (see ``causalrec.uplift.rows``).

    Roles as keywords: ``item`` (one column), ``treatment``, ``outcome``, ``confounders``,
    ``categorical``, ``text`` (stage-1 confounders), ``propensity``, ``unit``, ``missing``
    (the log's policy, which the features follow too); ``row_id``: an
    integer column naming rows (default ``monotonically_increasing_id``); ``barrier`` as in
    ``estimate_item_effects_spark``. The model's ``text`` features are not supported on
    Spark (``ValueError``); categorical levels beyond ``max_levels`` tied in count are cut in
    level order (pandas: order of appearance)."""

    device = "cpu"

    def __init__(self, sdf, *, item, treatment, outcome, confounders=None, categorical=None,
                 text=None, propensity=None, unit=None, missing="error", row_id=None,
                 barrier=True):
        self.data, self.missing = sdf, missing
        self.roles = dict(item=item, treatment=treatment, outcome=outcome,
                          confounders=confounders, categorical=categorical, text=text,
                          propensity=propensity, unit=unit, missing=missing)
        self.row_id, self.barrier = row_id, barrier

    def check(self, model) -> None:
        if model.encoder_.text:
            raise ValueError("UpliftModel on Spark takes numeric and categorical features; "
                             "text features need the pandas fit")
        item = self.roles["item"]
        items = [item] if isinstance(item, str) else list(item)
        if len(items) != 1:
            raise ValueError(f"UpliftModel needs one item column, got {items}")
        model.item_column_ = items[0]
        sample = validate(self.data, {k: v for k, v in self.roles.items() if v is not None})
        model.encoder_.check(sample.data, "log")
        F = _F()
        features = model.encoder_.features
        if features:  # a bad value anywhere: its rows raise the pandas error
            bad = None
            for col in features:
                v = F.col(col).cast("double")
                cond = F.abs(v) == float("inf")
                if self.missing != "indicator":
                    cond = cond | _missing(v)
                bad = cond if bad is None else bad | cond
            offending = self.data.where(bad).limit(5).toPandas()
            if len(offending):
                model.encoder_.check(offending, "log")

    def stage1(self, model):
        F = _F()
        key = (F.monotonically_increasing_id() if self.row_id is None
               else F.col(self.row_id).cast("long"))
        self.keyed = self.data.withColumn(ROW_ID, key)
        params = ItemEffectEstimator(**stage1_options(model.estimator_options)).get_params(deep=False)
        if params["shards"] == 1:  # the local default (one solver): on Spark, the cluster's
            params["shards"] = None
        res = estimate_item_effects_spark(self.keyed, row_id=ROW_ID, row_outputs=True,
                                          barrier=self.barrier, **self.roles, **params)
        self.item = model.item_column_
        outputs = res.rows.withColumnRenamed("row_id", ROW_ID).select(
            ROW_ID, "propensity", "mu0", "mu1", "fold")
        columns = list(dict.fromkeys([self.item, self.roles["treatment"], self.roles["outcome"],
                                      *model.encoder_.input_columns, ROW_ID]))
        self.rows = self.keyed.select(*columns).join(outputs, on=ROW_ID, how="inner").persist()
        items = res.estimator.segments_[self.item].to_numpy()
        self.items = pd.Index(items)
        return res.estimator, res.effects, items

    def fit_encoder(self, encoder) -> None:
        """Levels by summed per-partition counts, then mean and standard deviation of the raw
        columns in two passes (as numpy's), on every row of the log."""
        data = self.keyed.select(*encoder.input_columns)
        counts = {}
        if encoder.categorical:
            parts = _map_partitions(data, lambda pdf: {col: level_counts(pdf[col])
                                                        for col in encoder.categorical})
            for col in encoder.categorical:
                summed = pd.concat([part[col] for part in parts]).groupby(level=0).sum()
                counts[col] = summed.sort_index().sort_values(ascending=False, kind="stable")
        encoder.fit_levels(counts)
        encoder.text_ = None
        fill, indicators = {}, []
        if encoder.missing == "indicator" and encoder.features:  # stage 0's fills, all rows
            fill, n_missing = _fills(data, list(encoder.features), data.count())
            indicators = [col for col in encoder.features if n_missing[col]]
        encoder.fit_missing(fill, indicators)
        sums = sum_parts(_map_partitions(data, lambda pdf: (
            encoder.raw(pdf)[0].sum(0), np.array([len(pdf)], dtype=np.float64))))
        mean = sums[0] / sums[1][0]
        (squares,) = sum_parts(_map_partitions(data, lambda pdf: (
            ((encoder.raw(pdf)[0] - mean) ** 2).sum(0),)))
        names = encoder.raw(data.limit(0).toPandas())[1]
        encoder.fit_moments(mean, np.sqrt(squares / sums[1][0]), names)
        self.encoder = encoder

    def _block_of(self):
        encoder, items, item = self.encoder, self.items, self.item
        t, y = self.roles["treatment"], self.roles["outcome"]

        def block(pdf) -> Block:
            g1, g0 = dr_outcomes(pdf[t].to_numpy(float), pdf[y].to_numpy(float),
                                 pdf["propensity"].to_numpy(float), pdf["mu0"].to_numpy(float),
                                 pdf["mu1"].to_numpy(float))
            g = g1 - g0
            use = np.isfinite(g)
            pdf = pdf[use]
            return Block(encoder.encode(pdf), g[use], items.get_indexer(pdf[item]),
                         pdf["fold"].to_numpy(np.int64), pdf[ROW_ID].to_numpy(np.int64), g1[use])
        return block

    def reduce(self, fn):
        block = self._block_of()
        to_numpy = lambda v: v.cpu().numpy() if hasattr(v, "cpu") else np.asarray(v)

        def part(pdf):
            blk = block(pdf)
            return tuple(to_numpy(v) for v in fn(blk)) if len(blk.g) else None
        return sum_parts(p for p in _map_partitions(self.rows, part) if p is not None)

    def pseudo_outcomes(self):
        """A Spark DataFrame ``row_id, pseudo_outcome`` of the stage-1 fitted rows."""
        t, y = self.roles["treatment"], self.roles["outcome"]

        def run(batches):
            for pdf in batches:
                g = pseudo_outcomes(pdf[t].to_numpy(float), pdf[y].to_numpy(float),
                                    pdf["propensity"].to_numpy(float), pdf["mu0"].to_numpy(float),
                                    pdf["mu1"].to_numpy(float))
                yield pd.DataFrame({"row_id": pdf[ROW_ID].to_numpy(np.int64),
                                    "pseudo_outcome": np.where(np.isfinite(g), g, np.nan)})
        return self.rows.mapInPandas(run, "row_id long, pseudo_outcome double")
