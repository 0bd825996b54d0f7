"""The Spark backend: the rows stay in a Spark DataFrame; shards of whole items are fitted by
tasks running the same ``fit_shard`` as the local fit (per_item: independent tasks, unless
its ridge is tuned on a small log; pooled: one barrier stage coupled by gloo, or without
barrier mode rounds of plain tasks, ``replay.py``). Only the shards' small ``ShardPart``s
reach the driver, never the rows."""
from __future__ import annotations

import logging
import pickle
from dataclasses import replace

import numpy as np

from ..estimate.folds import check_fold_rows
from ..estimate.nuisance import pack_shards
from ..glm.layout import block_size_for
from ..glm.reducer import Reducer
from .shard import CODE, OUTPUT_SCHEMA, ROW_ID, SHARD, ShardJob, fit_shard_rows

__all__ = ["SparkBackend", "run_pooled", "partition_keys", "default_shards", "PARTITION_KEY"]

log_ = logging.getLogger("causalrec.spark")
PARTITION_KEY = "__causalrec_partition"


def _functions():
    from pyspark.sql import functions as F
    return F


def default_shards(spark) -> int:
    try:  # classic Spark: one shard per core; Spark Connect has no SparkContext
        return max(1, int(spark.sparkContext.defaultParallelism))
    except Exception:
        return 2


class SparkBackend:
    """Rows in the Spark frame ``sdf`` (with a ``ROW_ID`` column); ``columns``: the role
    columns the tasks read; ``content``: the columns the folds hash; ``folds``: a column of
    given folds or None; ``extra``: the text components' columns. ``shards`` (None: the
    cluster's default parallelism), ``barrier`` and ``row_outputs`` as in
    ``estimate_item_effects_spark``. After ``run``: ``shard_of_item``, ``mode`` ("barrier",
    "rounds" or None), ``rows`` (the per-row outputs, a persisted Spark frame, or None)."""

    distributed = True

    def __init__(self, sdf, *, keys, treatment, outcome, columns, content, folds=None,
                 propensity=None, extra=(), shards=None, barrier=True, row_outputs=False):
        self.sdf, self.keys, self.treatment, self.outcome = sdf, list(keys), treatment, outcome
        self.columns, self.content, self.folds = list(columns), list(content), folds
        self.propensity, self.extra = propensity, list(extra)
        self.shards, self.barrier, self.row_outputs = shards, barrier, row_outputs
        self.shard_of_item, self.mode, self.rows = None, None, None

    def run(self, plan, fit_shard) -> list:
        """``fit_shard(plan, shard data, reducer)`` on every shard of the plan's fitted items,
        in Spark tasks -> their ``ShardPart``s (row arrays left on the executors);
        ``ValueError`` when a split's fitted rows lie in one fold (``check_split``)."""
        F, facts = _functions(), plan.facts
        codes = np.flatnonzero(facts.use)
        self.shard_of_item = np.full(plan.n_items, -1, dtype=np.int64)
        if not len(codes):
            return []
        spark = self.sdf.sparkSession
        # a flexible nuisance: one task of every fitted row, items numbered as locally (the
        # learners see the item codes); the GLMs: shards of whole items by row count
        n_shards = 1 if plan.flexible is not None else int(self.shards or default_shards(spark))
        n_shards = min(n_shards, len(codes))
        self.shard_of_item[codes] = pack_shards(facts.n_all[codes], n_shards)
        shard_items = ([np.arange(plan.n_items)] if plan.flexible is not None else
                       [np.flatnonzero(self.shard_of_item == s) for s in range(n_shards)])
        # the partition key of each shard: a value Spark's hash partitioner sends to partition s
        items = facts.segments.copy()
        items[CODE], items[SHARD] = np.arange(plan.n_items), self.shard_of_item
        items[PARTITION_KEY] = partition_keys(spark, n_shards)[np.maximum(self.shard_of_item, 0)]
        items_sdf = spark.createDataFrame(items[items[SHARD] >= 0].reset_index(drop=True))
        columns = list(dict.fromkeys(self.columns + self.content
                                     + [ROW_ID, CODE, SHARD, PARTITION_KEY]))
        fitted = self.sdf.join(F.broadcast(items_sdf), on=self.keys, how="inner").select(*columns)
        job = ShardJob(plan=plan, fit=fit_shard, treatment=self.treatment, outcome=self.outcome,
                       propensity=self.propensity, content=self.content, folds=self.folds,
                       extra=self.extra,
                       shard_items=shard_items,
                       block_size=_block_size(facts.arm_rows[codes], plan.params["n_folds"]),
                       row_outputs=self.row_outputs)
        # per_item couples its shards only where its ridge is tuned (the loss sums of every
        # shard choose it, as in one process)
        pooled = plan.flexible is None and n_shards > 1 and (
            plan.params["nuisance"] == "pooled" or plan.tune_columns is not None)
        if not pooled:  # independent tasks, one per shard
            out = fitted.groupBy(SHARD).applyInPandas(
                lambda pdf: fit_shard_rows(pdf, job, Reducer()), OUTPUT_SCHEMA)
            payloads, self.rows = _collect(out, self.row_outputs)
        else:
            # independent fits side by side (the penalty grid's; a fold's e, mu0, mu1): a
            # reduction carries all of theirs (a round in rounds mode; an all-reduce in a
            # barrier stage)
            together = replace(job, lockstep=True)
            task = lambda rows, red: fit_shard_rows(rows, together, red)
            payloads, self.rows, self.mode = run_pooled(
                fitted, task, n_shards, self.barrier, self.row_outputs, rounds_task=task)
        parts = [pickle.loads(payload) for payload in payloads]
        _check_splits(parts, plan.unit, given=self.folds is not None)
        return parts


def _check_splits(parts, unit, given: bool) -> None:
    """``check_fold_rows`` of every split's rows per fold, summed over the shards: the local
    fit's check, made here after the fit because the tasks draw the folds (a split in one
    fold costs one fit on Spark, then the same ``ValueError``)."""
    for repeat, rows in enumerate(sum(part.fold_rows for part in parts)):
        check_fold_rows(rows, unit, given=given and repeat == 0)


def _block_size(arm_rows: np.ndarray, n_folds: int) -> int:
    """The local fit's block size: the mean of its non-empty (fold, arm, item) cells, an arm
    of r rows filling min(r, n_folds) folds (exact unless duplicated rows share a fold)."""
    if not len(arm_rows):
        return 8
    cells = int(np.minimum(arm_rows, n_folds).sum())
    counts = np.ones(max(cells, 1), dtype=np.int64)
    counts[0] += int(arm_rows.sum()) - len(counts)
    return block_size_for(counts)


def _collect(out, row_outputs):
    """The shards' pickled payloads, and the per-row outputs (persisted) if asked."""
    F = _functions()
    if row_outputs:
        out = out.persist()
    payloads = [r["payload"] for r in out.where(F.col("payload").isNotNull())
                .select("payload").collect()]
    rows = out.where(F.col("payload").isNull()).drop("payload") if row_outputs else None
    return payloads, rows


def partition_keys(spark, n_shards: int) -> np.ndarray:
    """For each partition s < n_shards, a long whose hash Spark's ``repartition(n, col)``
    sends to s (found by Spark's own ``hash``, so no partitioner is reimplemented here)."""
    F = _functions()
    found = (spark.range(64 * n_shards).select("id", F.pmod(F.hash("id"), F.lit(n_shards)).alias("p"))
             .groupBy("p").agg(F.min("id").alias("id")).toPandas())
    keys = np.full(n_shards, -1, dtype=np.int64)
    keys[found["p"].to_numpy(np.int64)] = found["id"].to_numpy(np.int64)
    if (keys < 0).any():
        raise RuntimeError("no partition key found for some shards")  # 64 tries per shard
    return keys


def run_pooled(fitted, task, n_shards, barrier, row_outputs=False, what="the pooled fit",
               rounds_task=None):
    """A pooled fit: ``task(shard rows, reducer)`` (-> ``OUTPUT_SCHEMA`` rows) for each shard
    of ``fitted`` (by its partition key), coupled by a barrier stage with gloo, or (barrier
    False, or no barrier mode on the cluster) by rounds of plain tasks over the cached shards,
    one Spark job per reduction (``replay.run_rounds``: the same sums in the same order, the
    same result; the rows stay on the executors; ``rounds_task``, if given, runs there
    instead: e.g. one that sends independent fits' reductions together), and a log line
    naming ``what`` says which and why. The one pooled runner of the Spark path (estimator
    and audit). Returns (payloads, per-row outputs, "barrier" | "rounds")."""
    parts = fitted.repartition(n_shards, PARTITION_KEY)
    if barrier:
        try:
            out = _barrier_stage(parts, task, n_shards, row_outputs)
            log_.info("causalrec.spark: %s as a barrier stage of %d tasks (gloo)", what, n_shards)
            return (*out, "barrier")
        except Exception as exc:  # e.g. dynamic allocation, too few slots for the stage
            if "barrier" not in str(exc).lower() or "PythonException" in str(exc):
                raise
            line = next(x for x in str(exc).splitlines() if "barrier" in x.lower())
            why = f"barrier mode unavailable ({line.strip(': ')})"
    else:
        why = "barrier=False"
    log_.warning("causalrec.spark: %s; running %s as rounds of plain tasks over the cached "
                 "shards (one Spark job per reduction; a task resumes its suspended fit when "
                 "it lands on the same Python worker, else rebuilds its shard and replays the "
                 "reductions so far: up to quadratic in their number)", why, what)
    from .barrier import _fault
    from .replay import run_rounds
    parts = parts.persist()
    try:
        payloads, rows, stats = run_rounds(parts, rounds_task or task, n_shards, row_outputs,
                                           fault=_fault)
    finally:
        parts.unpersist()
    log_.info("causalrec.spark: %s in %d rounds, %.1f s; %d of %d round tasks resumed, the "
              "others replayed", what, stats["rounds"], stats["seconds"], stats["resumed"],
              stats["tasks"])
    return payloads, rows, "rounds"


def _barrier_stage(parts, task, n_shards, row_outputs):
    """The barrier stage of ``run_pooled`` -> (payloads, per-row outputs)."""
    from .barrier import barrier_task
    out = parts.mapInPandas(barrier_task(task, n_shards), OUTPUT_SCHEMA, barrier=True)
    # a shuffle after the barrier stage: Spark retries a failed barrier stage (all its
    # tasks) only when it is a map stage, never when it is the result stage
    return _collect(out.repartition(1), row_outputs)
