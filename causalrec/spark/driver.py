"""The Spark path of ``estimate_item_effects``: stage 0 on the cluster, shards of whole items
fitted by tasks (per_item: independent tasks; pooled: one barrier stage coupled by gloo, or
without barrier mode rounds of plain tasks, ``replay.py``), the per-item tables concatenated and finished on the driver as the local estimator does."""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..estimate.design import DesignSpec
from ..estimate.api import split_roles
from ..estimate.estimator import ItemEffectEstimator, resolve_shrinkage
from ..estimate.nuisance import pack_shards, tunes_shared_penalty
from ..estimate.scaling import OutcomeScale
from ..estimate.scores import effects_table
from ..glm.layout import block_size_for, resolve_device
from ..nuisance.balance import balance_column_names
from .shard import CODE, OUTPUT_SCHEMA, ROW_ID, SHARD, ShardJob, fit_shard
from .stage0 import (check_fold_column, design_spec, item_facts, outcome_scale, schema_frame,
                     validate)

__all__ = ["SparkEffects", "estimate_item_effects_spark"]

log_ = logging.getLogger("causalrec.spark")
_PARTITION_KEY = "__causalrec_partition"


@dataclass
class SparkEffects:
    """Result of the Spark path: ``effects`` (pandas, as the local call), ``rows`` (a Spark
    DataFrame keyed by ``row_id``: propensity, mu0, mu1, psi, fold of the fitted rows; None
    unless asked), the ``design_spec``, the shard of each item, how the pooled fit ran
    ("barrier", "rounds" or None for per_item) and, per shard, its all-reduces (count,
    seconds spent in them)."""

    effects: pd.DataFrame
    rows: object
    design_spec: DesignSpec
    shard_of_item: np.ndarray
    pooled_mode: str | None
    estimator: ItemEffectEstimator
    reductions: dict


def _spark_of(sdf):
    return sdf.sparkSession


def _default_shards(spark) -> int:
    try:  # classic Spark: one shard per core; Spark Connect has no SparkContext
        return max(1, int(spark.sparkContext.defaultParallelism))
    except Exception:
        return 2


def estimate_item_effects_spark(sdf, item, treatment, outcome, confounders=None,
                                categorical=None, text=None, propensity=None, by=None,
                                graph=None, folds=None, *, shards=None, row_id=None,
                                row_outputs=False, barrier=True, fold_columns=None,
                                unit=None, **options) -> SparkEffects:
    """``estimate_item_effects`` on a Spark DataFrame (same arguments and table).

    shards : number of shards (default: the cluster's default parallelism); a pooled fit
        runs one barrier task per shard, so it needs that many free task slots (the rounds
        without barrier mode do not: their tasks are plain tasks).
    row_id : a column identifying rows (default: ``monotonically_increasing_id`` of the
        frame, which follows the order of its files); per-row outputs are keyed by it and
        each shard orders its rows by it, as the local fit orders rows.
    row_outputs : also return the per-row outputs as a Spark DataFrame (persisted).
    barrier : run the pooled fit as a barrier stage; False (or a cluster without barrier
        mode) runs it as rounds of plain tasks over the cached shards, one Spark job per
        reduction (same result, slower: see ``replay``); a log line says which ran and why.
    graph : a ``CausalGraph``; its backdoor adjustment set supplies the confounders (their
        roles from the Spark column types: numeric or boolean -> confounders, else categorical).
    folds : the name of an integer column of ``sdf`` holding each row's cross-fitting fold
        in [0, n_folds) (the pandas call takes an array; a Spark frame has no row order to
        align one with); checked by one aggregation, a bad column raises ``ValueError``.
        Repeats beyond the first draw their folds as without it (``ItemEffectEstimator.fit``).
    fold_columns : the columns whose content sets each row's fold (default: the keys and
        every confounder); a refutation that adds a column keeps the original folds so.
    unit : the unit column (user, session): each row's fold from its unit's value alone,
        computed by the shards with ``unit_folds``, so the folds equal the local fit's.
    """
    F = _functions()
    if graph is not None:  # the adjustment set's roles need the columns' names and types only
        roles = graph.merge_adjustment(schema_frame(sdf), confounders, categorical, text)
        confounders, categorical, text = roles["confounders"], roles["categorical"], roles["text"]
    keys, confounders, categorical, text = split_roles(item, by, confounders, categorical, text)
    roles = dict(item=keys, treatment=treatment, outcome=outcome, confounders=confounders,
                 categorical=categorical, text=text, propensity=propensity, unit=unit)
    est = ItemEffectEstimator(**options)
    est._validate_params()
    est.unit_ = unit
    if est.nuisance not in ("pooled", "per_item"):
        raise ValueError("the Spark path supports nuisance='pooled' or 'per_item'")
    if folds is not None:
        check_fold_column(sdf, folds, est.n_folds)
    sample_log = validate(sdf, roles)
    if row_id is None:
        sdf = sdf.withColumn(ROW_ID, F.monotonically_increasing_id())
    else:
        sdf = sdf.withColumn(ROW_ID, F.col(row_id).cast("long"))
    extra = []  # (Spark column, design name) of the text components
    if text:
        from .text import text_features
        sdf, safe, names, est.text_confounders_ = text_features(
            sdf, text, encoder=est.text_encoder, n_components=est.text_components,
            row_id=ROW_ID, seed=est.seed)
        extra = list(zip(safe, names))
    else:
        est.text_confounders_ = None
    facts = item_facts(sdf, sample_log, est.min_rows_per_arm)
    n_seg = len(facts.segments)
    est.segments_ = facts.segments
    codes = np.flatnonzero(facts.use)
    spark = _spark_of(sdf)
    n_shards = min(int(shards or _default_shards(spark)), max(len(codes), 1))
    shard_of_item = np.full(n_seg, -1, dtype=np.int64)
    shard_of_item[codes] = pack_shards(facts.n_all[codes], n_shards) if len(codes) else []
    # the partition key of each shard: a value Spark's hash partitioner sends to partition s
    key_of = _partition_keys(spark, n_shards)
    items = facts.segments.copy()
    items[CODE], items[SHARD] = np.arange(n_seg), shard_of_item
    items[_PARTITION_KEY] = key_of[np.maximum(shard_of_item, 0)]
    if len(codes):
        items_sdf = spark.createDataFrame(items[items[SHARD] >= 0].reset_index(drop=True))
        fitted = sdf.join(F.broadcast(items_sdf), on=keys, how="inner")
    spec_rows = fitted if len(codes) else sdf
    n_spec = int(facts.n_all[codes].sum()) if len(codes) else int(facts.n_all.sum())
    spec = design_spec(spec_rows, sample_log, n_spec, facts.fitted_binary, extra=extra)
    est.design_spec_ = spec
    est.design_columns_, est.dropped_columns_ = list(spec.columns), list(spec.dropped)
    balance_column_names(spec, est.balance_columns)  # a bad name fails here, not in a task
    est.shrinkage_ = resolve_shrinkage(est.shrinkage, len(spec.columns))
    est.outcome_family_ = est._outcome_family(sample_log, facts.binary)
    # a continuous outcome is fitted centred and scaled, as locally (estimate/scaling.py)
    est.outcome_scale_ = (outcome_scale(spec_rows, outcome) if est.outcome_family_ == "gaussian"
                          else OutcomeScale())
    prop_model, out_model = est._nuisance_models(propensity is None)
    block_size = _block_size(facts.arm_rows[codes], est.n_folds)
    # few rows per column: the pooled models' shared penalty is tuned, as locally
    # (rows of a recurring unit are not independent: the gate counts units, as locally)
    n_independent = (n_spec if unit is None or est.nuisance != "pooled"
                     else spec_rows.select(unit).distinct().count())
    tune_columns = (len(spec.columns) if est.nuisance == "pooled"
                    and tunes_shared_penalty(n_independent, len(spec.columns)) else None)
    job = ShardJob(spec=spec, keys=keys, treatment=treatment, outcome=outcome,
                   propensity=propensity,
                   content=list(fold_columns or keys + confounders + categorical + text),
                   folds=folds, unit=unit,
                   extra=[col for col, _ in extra],
                   shard_items=[np.flatnonzero(shard_of_item == s) for s in range(n_shards)],
                   propensity_model=prop_model, outcome_model=out_model,
                   options=dict(n_folds=est.n_folds, seed=est.seed,
                                n_repeats=est._n_repeats(int(facts.n_all[codes].sum()),
                                                         folds_given=folds is not None),
                                method=est.method, clip=est.clip, trim=est.trim,
                                alpha=est.alpha, normalize=est.normalize,
                                balance_penalty=est._balance_penalty(),
                                balance_columns=est.balance_columns),
                   binary=facts.binary, device=str(est.device), dtype=str(est.dtype).replace(
                       "torch.", ""), block_size=int(block_size), row_outputs=row_outputs,
                   outcome_scale=est.outcome_scale_, tune_columns=tune_columns,
                   outcome_family=est.outcome_family_)
    mode, rows_sdf, payloads = None, None, []
    if len(codes):
        columns = list(dict.fromkeys(keys + [treatment, outcome] + confounders + categorical
                                     + text + [col for col, _ in extra] + job.content
                                     + ([propensity] if propensity else [])
                                     + ([folds] if folds is not None else [])
                                     + ([unit] if unit is not None else [])
                                     + [ROW_ID, CODE, SHARD, _PARTITION_KEY]))
        fitted = fitted.select(*columns)
        if est.nuisance == "per_item" or n_shards == 1:
            out = fitted.groupBy(SHARD).applyInPandas(_per_item_task(job), OUTPUT_SCHEMA)
            payloads, rows_sdf = _collect(out, row_outputs)
        else:
            task = lambda rows, red: fit_shard(rows, job, red)
            payloads, rows_sdf, mode = run_pooled(fitted, task, n_shards, barrier, row_outputs)
    table, converged, reductions = _assemble(payloads, shard_of_item, est, facts)
    est._finish(table, facts.status, facts.n_all, facts.n_t, converged, keys,
                resolve_device(est.device))
    return SparkEffects(est.effects_, rows_sdf, spec, shard_of_item, mode, est, reductions)


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
    """The shards' pickled per-item results, and the per-row outputs (persisted) if asked."""
    F = _functions()
    if row_outputs:
        out = out.persist()
    payloads = [r["payload"] for r in out.where(F.col("payload").isNotNull())
                .select("payload").collect()]
    rows = out.where(F.col("payload").isNull()).drop("payload") if row_outputs else None
    return payloads, rows


def _functions():
    from pyspark.sql import functions as F
    return F


def _partition_keys(spark, n_shards: int) -> np.ndarray:
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


def _per_item_task(job):
    return lambda pdf: fit_shard(pdf, job, _reducer())


def _reducer():
    from ..glm.reducer import Reducer
    return Reducer()


def run_pooled(fitted, task, n_shards, barrier, row_outputs=False, what="the pooled fit"):
    """A pooled fit: ``task(shard rows, reducer)`` (-> ``OUTPUT_SCHEMA`` rows) for each shard
    of ``fitted`` (by its partition key), coupled by a barrier stage with gloo, or (barrier
    False, or no barrier mode on the cluster) by rounds of plain tasks over the cached shards,
    one Spark job per reduction (``replay.run_rounds``: the same sums in the same order, the
    same result; the rows stay on the executors), and a log line naming ``what`` says which
    and why. The one pooled runner of the Spark path (estimator and audit). Returns
    (payloads, per-row outputs, "barrier" | "rounds")."""
    parts = fitted.repartition(n_shards, _PARTITION_KEY)
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
        payloads, rows, stats = run_rounds(parts, task, n_shards, row_outputs, fault=_fault)
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


def _assemble(payloads, shard_of_item, est, facts):
    """The per-item table of all items (segments order) from the shards' tables; items
    without fitted rows get ``effects_table`` of no rows, as in the local fit."""
    n_seg, converged, reductions = len(shard_of_item), {}, {}
    parts, codes = [], []
    for payload in payloads:
        shard, part, ok, _, reductions[shard] = pickle.loads(payload)
        items = np.flatnonzero(shard_of_item == shard)
        parts.append(part), codes.append(items)
        for name, flags in ok.items():
            converged.setdefault(name, np.ones(n_seg, dtype=bool))[items] = flags
    missing = np.setdiff1d(np.arange(n_seg), np.concatenate(codes) if codes else [])
    if len(missing):
        empty = lambda kind: torch.zeros(0, dtype=kind)
        part, _, _ = effects_table(empty(torch.long), empty(torch.float64), empty(torch.float64),
                                   empty(torch.float64), empty(torch.float64), empty(torch.float64),
                                   len(missing), est.method, est.clip, est.trim, est.alpha,
                                   binary=facts.binary, normalize=est.normalize)
        parts.append(part), codes.append(missing)
    whole = pd.concat(parts, ignore_index=True)
    whole.index = np.concatenate(codes)
    return whole.sort_index().reset_index(drop=True), converged, reductions
