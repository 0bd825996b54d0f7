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
from ..fairness.exposure import exposure_sums, shifted_groups
from ..fairness.rows import TEXT_PREFIX, AuditRows
from ..schema import InteractionLog
from .backend import PARTITION_KEY, default_shards, partition_keys, run_pooled
from .driver import estimate_item_effects_spark
from .shard import CODE, ROW_ID, SHARD, payload_row
from .stage0 import SAMPLE_ROWS, design_spec, validate

__all__ = ["fit_audit_spark", "SparkAuditRows"]


def _F():
    from pyspark.sql import functions as F
    return F


def fit_audit_spark(audit, sdf, barrier=True):
    """Fit ``audit`` (a ``FairnessAudit``) on the Spark frame ``sdf``; returns the audit.
    ``barrier``: the pooled fits (effects, exposure models) as barrier stages; False (or a
    cluster without barrier mode) runs them as rounds of plain tasks (``run_pooled``), as
    ``estimate_item_effects_spark``."""
    return audit.fit(SparkAuditRows(sdf, barrier=barrier))


class SparkAuditRows(AuditRows):
    """The audit's rows in a Spark DataFrame: the row work as aggregations and Spark tasks
    (see ``causalrec.fairness.rows`` for the interface); only small tables reach the driver."""

    def __init__(self, sdf, barrier=True):
        super().__init__(sdf)
        self.barrier = barrier

    def validate(self, plan) -> InteractionLog:
        self.rows = self.data.withColumn(ROW_ID, _F().monotonically_increasing_id())  # a fresh fit
        return validate(self.data, plan.log_roles)

    def group_counts(self, plan) -> pd.DataFrame:
        """Counts and the descriptive rates per group, by one aggregation."""
        F = _F()
        t, y = F.col(plan.treatment).cast("double"), F.col(plan.outcome).cast("double")
        per_group = (self.data.groupBy(F.col(plan.group).alias("group")).agg(
            F.count(F.lit(1)).alias("n"), F.sum(t).alias("n_treated"),
            F.avg(t).alias("exposure_rate"), F.avg(y).alias("outcome_rate"),
            F.avg(F.when(t == 1, y)).alias("outcome_if_recommended"),
            F.avg(F.when(t == 0, y)).alias("outcome_if_not_recommended"))
            .toPandas().set_index("group").sort_index())
        self.rates = per_group.drop(columns=["n", "n_treated"])
        return per_group[["n", "n_treated"]].astype({"n_treated": np.float64})

    def group_rates(self) -> pd.DataFrame:
        return self.rates

    def provider_facts(self, plan) -> pd.DataFrame | None:
        F = _F()
        if plan.provider not in self.data.columns:
            return None
        p = F.col(plan.provider)
        return self.data.groupBy(plan.item).agg(
            F.sum(F.when(p.isNull(), 1).otherwise(0)).alias("missing"),
            F.countDistinct(p).alias("distinct"), F.first(p, ignorenulls=True).alias("provider")
        ).toPandas().set_index(plan.item)

    def add_text(self, plan, estimator):
        if not plan.text:
            return [], None
        from .text import text_features
        self.rows, safe, names, encoder = text_features(
            self.rows, list(plan.text), encoder=estimator.text_encoder,
            n_components=estimator.text_components, row_id=ROW_ID, seed=estimator.seed)
        names = [f"{TEXT_PREFIX}{name}" for name in names]  # the local audit's names
        self.rows = self.rows.withColumnsRenamed(dict(zip(safe, names)))
        return names, encoder

    def segment_effects(self, plan, estimator, confounders, categorical) -> pd.DataFrame:
        params = estimator.get_params(deep=False)
        if params["shards"] == 1:  # the local default (one solver): on Spark, the cluster's
            params["shards"] = None
        return estimate_item_effects_spark(
            self.rows, plan.item, plan.treatment, plan.outcome, confounders=confounders,
            categorical=categorical, propensity=plan.propensity, by=[plan.group],
            row_id=ROW_ID, barrier=self.barrier, missing=plan.missing, **params).effects

    def exposure_sums(self, audit, confounders, categorical, items) -> dict:
        return _exposure_sums(audit, self.rows, confounders, categorical, items, self.barrier)


def _exposure_sums(audit, sdf, numeric, categorical, items, barrier) -> dict:
    """The exposure models' sums: the design spec of all rows by aggregations, then the exposure
    models fitted by one barrier task per shard of items (``exposure_sums`` with gloo), or
    without barrier mode by rounds of plain tasks, one per reduction (``run_pooled``)."""
    F = _F()
    spark = sdf.sparkSession
    sample = InteractionLog(sdf.limit(SAMPLE_ROWS).toPandas(), item=audit.item,
                            treatment=audit.treatment, outcome=audit.outcome,
                            confounders=numeric, categorical=categorical,
                            missing=audit.missing)
    n_rows = int(audit.groups_["n"].sum())
    spec = design_spec(sdf, sample, n_rows, None)
    n_item = (audit.group_effects_.groupby("item", sort=True)["n"].sum()
              .reindex(items).to_numpy(np.int64))
    n_shards = min(default_shards(spark), len(items))
    shard_of_item = pack_shards(n_item, n_shards)
    key_of = partition_keys(spark, n_shards)
    table = pd.DataFrame({audit.item: items, CODE: np.arange(len(items)), SHARD: shard_of_item,
                          PARTITION_KEY: key_of[shard_of_item]})
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
    return pickle.loads(payloads[0])
