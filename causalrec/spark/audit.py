"""``FairnessAudit.fit`` on a Spark DataFrame: the item x group effects by the Spark
estimator (the group as a ``by`` segment), the exposure models as one barrier stage over
shards of items (gloo sums their coupling, as in the pooled nuisance), and per-group,
per-item aggregates; only those small tables reach the driver, never the rows. The tables
equal the pandas audit's (same folds, same fits up to summation order)."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd

from ..estimate.nuisance import pack_shards
from ..fairness.exposure import exposure_from_sums, exposure_sums, shifted_groups
from ..schema import InteractionLog
from .driver import (_PARTITION_KEY, _default_shards, _partition_keys, estimate_item_effects_spark,
                     run_pooled)
from .shard import CODE, ROW_ID, SHARD, payload_row
from .stage0 import SAMPLE_ROWS, design_spec, validate

__all__ = ["fit_audit_spark"]


def _F():
    from pyspark.sql import functions as F
    return F


def fit_audit_spark(audit, sdf, barrier=True):
    """Fit ``audit`` (a ``FairnessAudit``) on the Spark frame ``sdf``; returns the audit.
    ``barrier``: the pooled fits (effects, exposure models) as barrier stages; False (or a
    cluster without barrier mode) runs them as rounds of plain tasks (``run_pooled``), as
    ``estimate_item_effects_spark``."""
    F = _F()
    roles = audit._roles()
    log = validate(sdf, roles)
    t, y = F.col(audit.treatment).cast("double"), F.col(audit.outcome).cast("double")
    per_group = (sdf.groupBy(F.col(audit.group).alias("group")).agg(
        F.count(F.lit(1)).alias("n"), F.sum(t).alias("n_treated"),
        F.avg(t).alias("exposure_rate"), F.avg(y).alias("outcome_rate"),
        F.avg(F.when(t == 1, y)).alias("outcome_if_recommended"),
        F.avg(F.when(t == 0, y)).alias("outcome_if_not_recommended"))
        .toPandas().set_index("group").sort_index())
    audit._check_groups(per_group.index.to_numpy())
    provider = None
    if audit.provider is not None:
        provider = _providers(audit, sdf)
    audit._check_reference(per_group.index)
    audit._start(sdf)
    est = audit.estimator_
    sdf = sdf.withColumn(ROW_ID, F.monotonically_increasing_id())
    numeric = list(log.confounders)
    if log.text:  # embedded once; the components join the numeric confounders of every model
        from .text import text_features
        sdf, safe, names, audit.text_confounders_ = text_features(
            sdf, log.text, encoder=est.text_encoder, n_components=est.text_components,
            row_id=ROW_ID, seed=est.seed)
        # the local audit's names: the folds hash the confounders in name order
        names = [f"_text_{name}" for name in names]
        sdf = sdf.withColumnsRenamed(dict(zip(safe, names)))
        numeric += names
    params = est.get_params(deep=False)
    if params["shards"] == 1:  # the local default (one solver): on Spark, the cluster's
        params["shards"] = None
    effects = estimate_item_effects_spark(
        sdf, audit.item, audit.treatment, audit.outcome, confounders=numeric,
        categorical=log.categorical, propensity=audit.propensity, by=[audit.group],
        row_id=ROW_ID, barrier=barrier, **params).effects
    counts = per_group[["n", "n_treated"]].astype({"n_treated": np.float64})
    items = np.sort(pd.unique(effects["item"]))  # every item has a segment
    audit._compare(effects, counts, items)
    audit.exposure_ = _exposure(audit, sdf, numeric, log.categorical, items, barrier)
    audit._benefit(provider)
    audit._metrics_by_group = per_group.drop(columns=["n", "n_treated"])
    return audit


def _providers(audit, sdf) -> pd.Series:
    """item -> provider (sorted by item), after the pandas audit's checks, by one aggregation."""
    F = _F()
    if audit.provider not in sdf.columns:
        audit._check_provider(sdf.columns, 0, False)
    p = F.col(audit.provider)
    per_item = sdf.groupBy(audit.item).agg(
        F.sum(F.when(p.isNull(), 1).otherwise(0)).alias("missing"),
        F.countDistinct(p).alias("distinct"), F.first(p, ignorenulls=True).alias("provider")
    ).toPandas()
    audit._check_provider(sdf.columns, int(per_item["missing"].sum()),
                          bool((per_item["distinct"] > 1).any()))
    return per_item.set_index(audit.item)["provider"].sort_index()


def _exposure(audit, sdf, numeric, categorical, items, barrier) -> pd.DataFrame:
    """The exposure table: the design spec of all rows by aggregations, then the exposure
    models fitted by one barrier task per shard of items (``exposure_sums`` with gloo), or
    without barrier mode by rounds of plain tasks, one per reduction (``run_pooled``)."""
    F = _F()
    spark = sdf.sparkSession
    sample = InteractionLog(sdf.limit(SAMPLE_ROWS).toPandas(), item=audit.item,
                            treatment=audit.treatment, outcome=audit.outcome,
                            confounders=numeric, categorical=categorical)
    n_rows = int(audit.groups_["n"].sum())
    spec = design_spec(sdf, sample, n_rows, None)
    n_item = (audit.group_effects_.groupby("item", sort=True)["n"].sum()
              .reindex(items).to_numpy(np.int64))
    n_shards = min(_default_shards(spark), len(items))
    shard_of_item = pack_shards(n_item, n_shards)
    key_of = _partition_keys(spark, n_shards)
    table = pd.DataFrame({audit.item: items, CODE: np.arange(len(items)), SHARD: shard_of_item,
                          _PARTITION_KEY: key_of[shard_of_item]})
    columns = list(dict.fromkeys([audit.item, audit.treatment, audit.group, *numeric,
                                  *categorical, ROW_ID]))
    rows = sdf.select(*columns).join(F.broadcast(spark.createDataFrame(table)), on=audit.item)
    shard_items = [np.flatnonzero(shard_of_item == s) for s in range(n_shards)]
    groups, others = list(audit.groups_.index), shifted_groups(audit)
    est, reference, treatment, group = audit.estimator_, audit.reference_, audit.treatment, audit.group

    def task(pdf, reducer):
        pdf = pdf.sort_values(ROW_ID, kind="stable").reset_index(drop=True)
        mine = shard_items[int(pdf[SHARD].iloc[0])]
        codes = np.searchsorted(mine, pdf[CODE].to_numpy(np.int64))
        X = spec.transform(pdf, None, dtype=np.float64).X
        sums = exposure_sums(est, X, pdf[treatment].to_numpy(np.float64), codes, len(mine),
                             pdf[group].to_numpy(), groups, others, reference, reducer)
        return payload_row(pickle.dumps(sums))

    payloads, _, _ = run_pooled(rows, task, n_shards, barrier, what="the exposure models")
    return exposure_from_sums(audit, pickle.loads(payloads[0]))
