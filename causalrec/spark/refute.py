"""``refute_item_effects`` on a Spark DataFrame: the checks that refit the estimator on
changed rows run through the Spark estimator, their random draws made by Spark (seeded,
stable for a fixed input partitioning), so the replicates differ from the pandas run's
numpy draws while each one equals the local estimator on the same changed rows.

* "placebo": the treatment permuted within each item (and ``by``) segment by two window
  ranks (row order, seeded random order) and a join; no logged propensity.
* "random_common_cause": a seeded N(0, 1) column (``randn``) added as a confounder, the
  folds hashed from the original columns only, so each row keeps its fold.
* "subset" is not run on Spark: it must keep each row's original fold while the folds are
  dealt within the remaining rows of each stratum; it raises a ``ValueError`` naming the
  alternatives (the other checks, or the subset check on a pandas sample of items).
"""
from __future__ import annotations

import pandas as pd

from ..estimate.folds import fold_content
from ..refute.checks import choose_refuters
from ..refute.loop import run_refutations
from ..refute.refutations import adjustment_roles
from ..schema import _as_list, split_roles
from .driver import estimate_item_effects_spark
from .shard import ROW_ID
from .stage0 import schema_frame

__all__ = ["refute_item_effects_spark", "SparkRefutationRows", "SPARK_CHECKS", "permute_within"]

SPARK_CHECKS = ("placebo", "random_common_cause")
_NO_SUBSET = ("the subset check does not run on a Spark frame (each row must keep its fold); "
              "use checks=('placebo', 'random_common_cause'), or run refute_item_effects on a "
              "pandas sample of items")


def _F():
    from pyspark.sql import functions as F
    return F


def permute_within(sdf, keys, column: str, seed: int):
    """``sdf`` with ``column`` permuted within each ``keys`` segment (seeded)."""
    F = _F()
    from pyspark.sql import Window
    ranked = sdf.withColumn("__causalrec_r", F.row_number().over(
        Window.partitionBy(*keys).orderBy(ROW_ID)))
    shuffled = (sdf.withColumn("__causalrec_u", F.rand(seed))
                .select(*keys, F.col(column).alias("__causalrec_v"), F.row_number().over(
                    Window.partitionBy(*keys).orderBy("__causalrec_u", ROW_ID))
                    .alias("__causalrec_r")))
    return (ranked.drop(column).join(shuffled, on=keys + ["__causalrec_r"])
            .withColumnRenamed("__causalrec_v", column).drop("__causalrec_r"))


def refute_item_effects_spark(sdf, item, treatment, outcome, confounders=None,
                              categorical=None, text=None, propensity=None, by=None,
                              graph=None, *, checks=None, rcc_tolerance: float = 1.0,
                              seed: int = 0, text_encoder=None, text_components: int = 8,
                              missing: str = "error", **options) -> pd.DataFrame:
    """The Spark checks (``SPARK_CHECKS``) of ``refute_item_effects``; same table, through
    the same loop (``run_refutations``)."""
    F = _F()
    refuters = choose_refuters(SPARK_CHECKS if checks is None else checks,
                               rcc_tolerance=rcc_tolerance)
    if "subset" in {refuter.name for refuter in refuters}:  # before any Spark job
        raise ValueError(_NO_SUBSET)
    alpha = options.get("alpha", 0.05)
    options = {"n_repeats": 1, **options}  # one split unless asked, as the local refutation
    keys = [item] + _as_list(by)
    confounders, categorical, text = adjustment_roles(schema_frame(sdf), confounders,
                                                      categorical, text, graph)
    sdf = sdf.withColumn(ROW_ID, F.monotonically_increasing_id())
    if text:  # embedded once; the components are numeric confounders of every run
        from .text import text_features
        sdf, safe, names, _ = text_features(sdf, text, encoder=text_encoder,
                                            n_components=text_components, row_id=ROW_ID,
                                            seed=seed)
        sdf = sdf.withColumnsRenamed(dict(zip(safe, names)))
        confounders = confounders + names

    def estimate(data, *, confounders=confounders, propensity=propensity, fold_columns=None):
        eff = estimate_item_effects_spark(
            data, item, treatment, outcome, confounders=confounders, categorical=categorical,
            propensity=propensity, by=by, seed=seed, row_id=ROW_ID, fold_columns=fold_columns,
            missing=missing, **options).effects
        return eff.rename(columns={"item": item, "ate": "estimate"})

    # the estimator's own fold columns (the segment keys out of the confounder roles)
    fold_columns = fold_content(*split_roles(item, by, confounders, categorical, None),
                                propensity=propensity)
    rows = SparkRefutationRows(sdf, keys=keys, treatment=treatment, confounders=confounders,
                               fold_columns=fold_columns, seed=seed, estimate=estimate)
    return run_refutations(rows, refuters, keys, alpha=alpha, settings=dict(
        subset_fraction=float("nan"), rcc_tolerance=rcc_tolerance))


class SparkRefutationRows:
    """The refutation checks' rows in a Spark frame (with ``ROW_ID``): Spark makes the random
    draws (seeded), and ``fold_columns`` (the original columns) hash each row's fold, so a
    column added by a check does not move it."""

    def __init__(self, sdf, *, keys, treatment, confounders, fold_columns, seed, estimate):
        self.sdf, self.keys, self.treatment, self.confounders = sdf, keys, treatment, confounders
        self.fold_columns, self.seed, self._estimate = fold_columns, seed, estimate

    def estimate(self, changed=None, *, confounders=None, drop_propensity=False,
                 same_folds=True) -> pd.DataFrame:
        options = dict(fold_columns=self.fold_columns if same_folds else None)
        if confounders is not None:
            options["confounders"] = confounders
        if drop_propensity:
            options["propensity"] = None
        return self._estimate(self.sdf if changed is None else changed, **options)

    def permuted(self, column: str):
        return permute_within(self.sdf, self.keys, column, self.seed)

    def with_noise(self, column: str):
        return self.sdf.withColumn(column, _F().randn(self.seed + 1))

    def subsample(self, fraction: float):
        raise ValueError(_NO_SUBSET)
