"""The Spark path of ``estimate_item_effects``: the fit's plan from stage 0 on the cluster
(``stage0.py``: counts, statuses, the design spec by aggregations), the shards fitted by Spark
tasks running the local fit's ``fit_shard`` (``backend.py``), and the shards' parts finished
on the driver by the plan, as the local estimator finishes its one part."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..estimate.design import DesignSpec
from ..estimate.estimator import ItemEffectEstimator
from ..estimate.folds import fold_content
from ..estimate.plan import (FitPlan, counts_units, outcome_family,
                              resolve_flexible as plan_flexible, split_roles)
from ..estimate.scaling import OutcomeScale
from ..estimate.shardfit import fit_shard
from ..nuisance.balance import balance_column_names
from .backend import SparkBackend
from .shard import ROW_ID
from .stage0 import (check_fold_column, design_spec, item_facts, outcome_scale, schema_frame,
                     validate)

__all__ = ["SparkEffects", "estimate_item_effects_spark", "item_effects"]


@dataclass
class SparkEffects:
    """Result of the Spark path: ``effects`` (pandas, as the local call), ``rows`` (a Spark
    DataFrame keyed by ``row_id``: propensity, mu0, mu1, psi, fold of the fitted rows; None
    unless asked), the ``design_spec``, the shard of each item, how the pooled fit ran
    ("barrier", "rounds" or None for independent tasks), the ``estimator`` holding the fit's
    plan-level attributes, and, per shard, its reductions (count, seconds spent in them)."""

    effects: pd.DataFrame
    rows: object
    design_spec: DesignSpec
    shard_of_item: np.ndarray
    pooled_mode: str | None
    estimator: ItemEffectEstimator
    reductions: dict


def estimate_item_effects_spark(sdf, item, treatment, outcome, confounders=None,
                                categorical=None, text=None, propensity=None, by=None,
                                graph=None, folds=None, *, shards=None, row_id=None,
                                row_outputs=False, barrier=True, fold_columns=None,
                                unit=None, missing="error", **options) -> SparkEffects:
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
    nuisance : as locally; a flexible one ("boosted", "auto", a scikit-learn learner, ...)
        is fitted in one task holding every fitted row (on an executor, never collected to
        the driver), with the local fit's folds, item codes and seeds: the same answers.
    """
    from pyspark.sql import functions as F
    if graph is not None:  # the adjustment set's roles need the columns' names and types only
        roles = graph.merge_adjustment(schema_frame(sdf), confounders, categorical, text)
        confounders, categorical, text = roles["confounders"], roles["categorical"], roles["text"]
    keys, confounders, categorical, text = split_roles(item, by, confounders, categorical, text)
    roles = dict(item=keys, treatment=treatment, outcome=outcome, confounders=confounders,
                 categorical=categorical, text=text, propensity=propensity, unit=unit,
                 missing=missing)
    est = ItemEffectEstimator(**options)
    params = FitPlan.check_params(est.get_params(deep=False))
    plan_flexible(params)  # a flexible nuisance's own checks, before any Spark job
    if folds is not None:
        check_fold_column(sdf, folds, params["n_folds"])
    sample_log = validate(sdf, roles)
    sdf = sdf.withColumn(ROW_ID, F.monotonically_increasing_id() if row_id is None
                         else F.col(row_id).cast("long"))
    extra = []  # (Spark column, design name) of the text components
    text_confounders = None
    if text:
        from .text import text_features
        sdf, safe, names, text_confounders = text_features(
            sdf, text, encoder=params["text_encoder"], n_components=params["text_components"],
            row_id=ROW_ID, seed=params["seed"])
        extra = list(zip(safe, names))
    # stage 0: the per-item facts, the design spec and outcome scale of the fitted rows
    facts, tallies = item_facts(sdf, sample_log, params["min_rows_per_arm"])
    fitted = sdf
    if facts.use.any():
        used = facts.segments[facts.use].reset_index(drop=True)
        fitted = sdf.join(F.broadcast(sdf.sparkSession.createDataFrame(used)), on=keys,
                          how="inner")
    n_spec = facts.n_fitted if facts.use.any() else int(facts.n_all.sum())
    spec = design_spec(fitted, sample_log, n_spec, facts.fitted_binary, extra=extra,
                       level_rows=tallies.level_rows,
                       items=facts.use if facts.use.any() else None)
    balance_column_names(spec, params["balance_columns"])  # a bad name fails here, not in a task
    # a continuous outcome is fitted centred and scaled, as locally (estimate/scaling.py)
    scale = (outcome_scale(fitted, outcome, tallies.largest_outcome)
             if outcome_family(params["outcome_model"], facts.binary, outcome) == "gaussian"
             else OutcomeScale())
    # rows of a recurring unit are not independent: the tuning gate counts units, as locally
    n_units = (None if unit is None or not counts_units(params)  # one Spark job: only if read
               else fitted.select(unit).distinct().count())
    plan = FitPlan.from_facts(params, facts, spec, scale, keys=keys,
                              fit_propensity=propensity is None, unit=unit, n_independent=n_units,
                              folds_given=folds is not None, outcome_name=outcome, checked=True)
    content = list(fold_columns or fold_content(keys, confounders, categorical, text,
                                                propensity=propensity))
    columns = (keys + [treatment, outcome] + confounders + categorical + text
               + [col for col, _ in extra] + ([propensity] if propensity else [])
               + ([folds] if folds is not None else []) + ([unit] if unit is not None else []))
    backend = SparkBackend(sdf, keys=keys, treatment=treatment, outcome=outcome, columns=columns,
                           content=content, folds=folds, propensity=propensity,
                           extra=[col for col, _ in extra], shards=shards, barrier=barrier,
                           row_outputs=row_outputs)
    parts = backend.run(plan, fit_shard)
    effects = plan.finish(parts)
    est.record_fit(plan, effects, text_confounders=text_confounders)
    reductions = {int(backend.shard_of_item[part.items[0]]): part.reductions for part in parts}
    return SparkEffects(effects, backend.rows, spec, backend.shard_of_item, backend.mode, est,
                        reductions)


def item_effects(sdf, *args, **kwargs) -> pd.DataFrame:
    """``estimate_item_effects`` of a Spark frame: the effects table of
    ``estimate_item_effects_spark`` (``causalrec.backend.backend_for``)."""
    return estimate_item_effects_spark(sdf, *args, **kwargs).effects
