"""What one Spark task runs: a shard's rows (pandas) -> the shard's ``ShardData`` -> the same
``fit_shard`` as the local fit (``causalrec.estimate.shardfit``) -> one row holding the pickled
``ShardPart``, and per-row outputs when asked. Nothing here imports pyspark."""
from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..estimate.folds import FoldAssigner, split_seed, unit_key
from ..estimate.plan import FitPlan
from ..estimate.shardfit import ShardData
from ..nuisance.balance import balancing_step

__all__ = ["ShardJob", "fit_shard_rows", "payload_row", "OUTPUT_SCHEMA", "ROW_ID", "CODE",
           "SHARD"]

ROW_ID, CODE, SHARD = "__causalrec_row", "__causalrec_code", "__causalrec_shard"
OUTPUT_SCHEMA = ("row_id long, propensity double, mu0 double, mu1 double, psi double, "
                 "fold long, payload binary")


def payload_row(payload: bytes, row_id: int = -1) -> pd.DataFrame:
    """One ``OUTPUT_SCHEMA`` row carrying a task's pickled ``payload`` (no per-row values)."""
    return pd.DataFrame({"row_id": [row_id], "propensity": [np.nan], "mu0": [np.nan],
                         "mu1": [np.nan], "psi": [np.nan], "fold": [-1], "payload": [payload]})


@dataclass
class ShardJob:
    """Everything a task needs besides its rows (small: shipped with the task's closure)."""

    plan: FitPlan
    fit: object                   # ``fit_shard`` (the one shard function)
    treatment: str
    outcome: str
    propensity: str | None
    content: list                 # the columns the folds hash (as the local estimator)
    folds: str | None             # a column of given folds (the first split's), or None
    extra: list                   # the design's extra columns (text components), in order
    shard_items: list             # per shard: its items' codes, ascending
    block_size: int               # the local fit's layout block size
    row_outputs: bool
    lockstep: bool = False        # independent fits' reductions together (a round or all-reduce)


def fit_shard_rows(pdf: pd.DataFrame, job: ShardJob, reducer) -> pd.DataFrame:
    """Rows of one shard (any order: sorted here by row id, as the local log) -> one row
    holding the pickled ``ShardPart`` (without row arrays), and per-row outputs when asked."""
    plan, p = job.plan, job.plan.params
    pdf = pdf.sort_values(ROW_ID, kind="stable").reset_index(drop=True)
    items = np.asarray(job.shard_items[int(pdf[SHARD].iloc[0])])
    seg = np.searchsorted(items, pdf[CODE].to_numpy(np.int64))
    t = pdf[job.treatment].to_numpy(dtype=np.int64)
    y = pdf[job.outcome].to_numpy(dtype=np.float64)
    extra = pdf[job.extra] if job.extra else None
    unit = None if plan.unit is None else pdf[plan.unit]
    # the rows' seed-free hashes once, for every repeat's seed (as locally)
    assigner = FoldAssigner(pdf, job.content, seg, t, y, p["n_folds"], item_columns=plan.keys,
                            unit=unit)
    fold_of = lambda seed: assigner(seed, warn_duplicates=seed == p["seed"])
    folds = fold_of(p["seed"]) if job.folds is None else pdf[job.folds].to_numpy(np.int64)
    logged_e = None if job.propensity is None else pdf[job.propensity].to_numpy(np.float64)
    # GLMs: the padded design read straight from the shard's columns, as in the local fit
    X = (plan.spec.rows(pdf, extra, dtype=plan.np_dtype) if plan.flexible is None
         else plan.spec.transform(pdf, extra, dtype=plan.np_dtype).X)
    data = ShardData(
        items=items, seg=seg, t=t, y=y, y_fit=plan.fit_outcome(y), X=X, rows=slice(None),
        split_folds=[folds] + [fold_of(split_seed(p["seed"], r)) for r in range(1, plan.n_repeats)],
        logged_e=logged_e, groups=None if unit is None else unit_key(unit),
        balance=balancing_step(plan.spec, pdf, extra, penalty=plan.balance_penalty,
                               columns=p["balance_columns"], method=p["method"],
                               fitted_propensity=logged_e is None),
        block_sizes=[job.block_size] * plan.n_repeats,
        fold_of=lambda r: fold_of(split_seed(p["seed"], r)))
    part = job.fit(plan, data, reducer, keep_rows=job.row_outputs, keep_fits=False,
                   lockstep=job.lockstep)
    out = payload_row(pickle.dumps(part.without_rows()))
    if not job.row_outputs:
        return out
    rows = part.rows
    per_row = pd.DataFrame({"row_id": pdf[ROW_ID].to_numpy(np.int64),
                            "propensity": rows["e_clipped"], "mu0": rows["mu0"],
                            "mu1": rows["mu1"], "psi": rows["psi"], "fold": folds,
                            "payload": None})
    return pd.concat([out, per_row], ignore_index=True)
