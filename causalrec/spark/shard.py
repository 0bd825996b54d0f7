"""What one Spark task runs: a shard's rows (pandas) -> its cross-fit and its part of the
effects table, with the engine's own functions. Nothing here imports pyspark."""
from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..estimate.design import DesignSpec
from ..estimate.folds import assign_folds
from ..estimate.nuisance import (_fit_shard, choose_penalties, merge_models, penalty_grid,
                                  tuning_losses, with_penalty)
from ..estimate.scaling import OutcomeScale
from ..estimate.scores import effects_table
from ..estimate.splits import SplitAverage
from ..glm import SegmentGLM
from ..glm.layout import read_only_tensor, resolve_device, resolve_dtype
from ..nuisance.balance import balancing_step

__all__ = ["ShardJob", "fit_shard", "OUTPUT_SCHEMA", "ROW_ID", "CODE", "SHARD"]

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

    spec: DesignSpec
    keys: list
    treatment: str
    outcome: str
    propensity: str | None
    content: list                 # the columns the folds hash (as the local estimator)
    folds: str | None             # a column of given folds (the first repeat's), or None
    unit: str | None              # the unit column: folds by unit (``unit_folds``), or None
    extra: list                   # the design's extra columns (text components), in order
    shard_items: list             # per shard: its items' codes, ascending
    propensity_model: SegmentGLM | None  # unfitted prototypes; None: the logged propensity
    outcome_model: SegmentGLM
    options: dict                 # n_folds, n_repeats, seed, method, clip, trim, alpha,
                                  # normalize, balance_penalty, balance_columns
    binary: bool
    device: str
    dtype: str
    block_size: int
    row_outputs: bool
    outcome_scale: OutcomeScale = OutcomeScale()  # the fits' outcome scale, as locally
    tune_columns: int | None = None  # design columns when the shared penalty is tuned, else None
    outcome_family: str = "logistic"  # the outcome models' family (the tuning's loss)


def _on(model, device):
    """The prototype with the task's device (a GPU executor resolves its own)."""
    if model is None:
        return None
    return model.clone().set_params(device=device)


def _fit_tuned(fit, reducer, propensity, outcome, t, y, n_columns: int, family: str):
    """``nuisance.cross_fit_tuned`` on a shard: one fit per penalty of the grid, the shards'
    out-of-fold loss sums added by the reducer, the same choice on every shard."""
    grid = penalty_grid(n_columns)
    fits = [fit(with_penalty(propensity, lam), with_penalty(outcome, lam)) for lam in grid]
    sums = np.stack([tuning_losses(p.get("e"), p["mu0"], p["mu1"], t, y, family)
                     for p, _ in fits])
    total = reducer.sum(torch.as_tensor(sums, dtype=torch.float64)).cpu().numpy()
    best_e, best_mu = choose_penalties(total, propensity is not None)
    (e_preds, e_fits), (mu_preds, mu_fits) = fits[best_e], fits[best_mu]
    preds = {**mu_preds, "e": e_preds["e"]} if "e" in e_preds else dict(mu_preds)
    return preds, merge_models(e_fits, mu_fits)


def fit_shard(pdf: pd.DataFrame, job: ShardJob, reducer) -> pd.DataFrame:
    """Rows of one shard (any order: sorted here by row id, as the local log) -> one row
    holding the pickled per-item results, and per-row outputs when asked."""
    o = job.options
    pdf = pdf.sort_values(ROW_ID, kind="stable").reset_index(drop=True)
    shard = int(pdf[SHARD].iloc[0])
    items = np.asarray(job.shard_items[shard])
    seg = np.searchsorted(items, pdf[CODE].to_numpy(np.int64))
    n_seg = len(items)
    device, dtype = resolve_device(job.device), resolve_dtype(job.dtype)
    t = pdf[job.treatment].to_numpy(dtype=np.int64)
    y = pdf[job.outcome].to_numpy(dtype=np.float64)
    y_fit = job.outcome_scale.standardise(y)  # (scale 1, centre 0 for a logistic outcome)
    extra = pdf[job.extra] if job.extra else None
    # the padded design is read straight from the shard's columns, as in the local estimator
    X = job.spec.rows(pdf, extra, dtype=np.float64 if dtype == torch.float64 else np.float32)
    logged_e = None if job.propensity is None else pdf[job.propensity].to_numpy(np.float64)
    propensity, outcome = _on(job.propensity_model, device), _on(job.outcome_model, device)
    rows = np.arange(len(pdf))
    fold_of = lambda seed: assign_folds(pdf, job.content, seg, t, y, o["n_folds"], seed,
                                        item_columns=job.keys, warn_duplicates=seed == o["seed"],
                                        unit=None if job.unit is None else pdf[job.unit])
    folds = fold_of(o["seed"]) if job.folds is None else pdf[job.folds].to_numpy(np.int64)
    balance = balancing_step(job.spec, pdf, extra, penalty=o["balance_penalty"],
                             columns=o["balance_columns"], method=o["method"],
                             fitted_propensity=logged_e is None)
    fits, converged, n_iter = None, {}, 0
    on_device = lambda a, kind: read_only_tensor(a, kind, device)
    splits = SplitAverage(o["alpha"])  # each split its own table, combined as locally
    for repeat in range(o["n_repeats"]):  # the local estimator's loop, on this shard
        split = folds if repeat == 0 else fold_of(o["seed"] + repeat)
        fit = lambda e_model, mu_model: _fit_shard(
            np.arange(n_seg), reducer, fits, X=X, center=None, scale=None, rows=rows, seg=seg,
            t=t, y=y_fit, folds=split, n_folds=o["n_folds"], n_items=n_seg,
            propensity=e_model, outcome=mu_model, block_size=job.block_size, device=device)[1:]
        if job.tune_columns is None:
            preds, fits = fit(propensity, outcome)
        else:  # few rows per column: the shared slopes' ridge by out-of-fold loss, as locally
            preds, fits = _fit_tuned(fit, reducer, propensity, outcome, t, y_fit,
                                     job.tune_columns, job.outcome_family)
        if logged_e is not None:
            preds["e"] = torch.as_tensor(logged_e, dtype=dtype, device=device)
        for models in fits:
            for name, model in models.items():
                converged[name] = converged.get(name, np.ones(n_seg, dtype=bool)) & model.converged_
                n_iter = max(n_iter, model.n_iter_)
        e, mu0, mu1 = [torch.as_tensor(preds[name], device=device).to(torch.float64)
                       for name in ("e", "mu0", "mu1")]
        mu0, mu1 = job.outcome_scale.restore(mu0), job.outcome_scale.restore(mu1)
        if balance is not None:  # per item, as the local estimator (items are not split)
            e, _ = balance(e, t, seg, n_items=n_seg)
        splits.add(*effects_table(on_device(seg, torch.long), on_device(t, torch.float64),
                                  on_device(y, torch.float64), e, mu0, mu1, n_seg,
                                  o["method"], o["clip"], o["trim"], o["alpha"],
                                  binary=job.binary, normalize=o["normalize"],
                                  folds=on_device(split, torch.long)), e, mu0, mu1)
        e = mu0 = mu1 = preds = None  # not alive beside the next split's fits
    table, psi, e_clipped, e, mu0, mu1 = splits.result()
    reductions = (getattr(reducer, "n_calls", 0), getattr(reducer, "seconds", 0.0))
    payload = pickle.dumps((shard, table, converged, n_iter, reductions))
    out = payload_row(payload)
    if not job.row_outputs:
        return out
    per_row = pd.DataFrame({"row_id": pdf[ROW_ID].to_numpy(np.int64), "propensity": e_clipped,
                            "mu0": mu0.cpu().numpy(), "mu1": mu1.cpu().numpy(), "psi": psi,
                            "fold": folds, "payload": None})
    return pd.concat([out, per_row], ignore_index=True)
