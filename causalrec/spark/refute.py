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

from ..refute.checks import RANDOM_COMMON_CAUSE, PlaceboTreatment, RandomCommonCause
from ..refute.refutations import CHECKS, _tidy
from ..schema import _as_list
from .driver import estimate_item_effects_spark
from .shard import ROW_ID

__all__ = ["refute_item_effects_spark", "SPARK_CHECKS"]

SPARK_CHECKS = ("placebo", "random_common_cause")


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
                              graph=None, *, checks=SPARK_CHECKS, rcc_tolerance: float = 1.0,
                              seed: int = 0, text_encoder=None, text_components: int = 8,
                              **options) -> pd.DataFrame:
    """The Spark checks (``SPARK_CHECKS``) of ``refute_item_effects``; same table."""
    F = _F()
    chosen = _as_list(checks)
    unknown = set(chosen) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; choose from {CHECKS}")
    if "subset" in chosen:
        raise ValueError("the subset check does not run on a Spark frame (each row must keep "
                         "its fold); use checks=('placebo', 'random_common_cause'), or run "
                         "refute_item_effects on a pandas sample of items")
    if graph is not None:
        raise ValueError("graph is not supported on the Spark path yet")
    alpha = options.get("alpha", 0.05)
    options = {"n_repeats": 1, **options}  # one split unless asked, as the local refutation
    keys = [item] + _as_list(by)
    confounders, categorical = _as_list(confounders), _as_list(categorical)
    sdf = sdf.withColumn(ROW_ID, F.monotonically_increasing_id())
    if _as_list(text):  # embedded once; the components are numeric confounders of every run
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
            **options).effects
        return eff.rename(columns={"item": item, "ate": "estimate"})

    original = estimate(sdf)
    runs = []
    if "placebo" in chosen:
        runs.append((PlaceboTreatment(), 0,
                     estimate(permute_within(sdf, keys, treatment, seed), propensity=None)))
    if "random_common_cause" in chosen:
        noisy = sdf.withColumn(RANDOM_COMMON_CAUSE, F.randn(seed + 1))
        runs.append((RandomCommonCause(rcc_tolerance), 0,
                     estimate(noisy, confounders=confounders + [RANDOM_COMMON_CAUSE],
                              fold_columns=keys + confounders + categorical)))
    out = _tidy(original, runs, keys, alpha)
    return out.assign(alpha=alpha, subset_fraction=float("nan"), rcc_tolerance=rcc_tolerance)
