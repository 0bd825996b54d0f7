"""The fit of one shard of whole items: the one repeated-split loop of every backend.

``fit_shard(plan, data, reducer)`` runs, for each cross-fitting split of the plan, the
nuisance fits (the GLMs, their shared-slope penalty tuned where the plan says so, or the
flexible learners), the balancing step and the per-item scores, and combines the splits
(``splits.py``). The local backend calls it once with every item (the GLM fits themselves
may be sharded over threads inside ``cross_fit``); a Spark task calls it with its shard's
rows and a reducer that couples the shards (gloo, or the rounds of ``spark/replay.py``).
Items are never split between shards, so each shard's per-item tables are final.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..glm.layout import read_only_tensor, release_free_heap
from ..glm.reducer import Reducer
from .folds import item_fold_rows, split_seed
from .nuisance import (cross_fit, cross_fit_tuned, penalty_grid, shrinkage_grid,
                       tuned_penalty, tunes_shared_penalty)
from .plan import FitPlan, ShardPart, repeats_for_split_noise
from .scores import unit_pairs
from .splits import SplitAverage, split_noise_sums

__all__ = ["ShardData", "fit_shard"]


@dataclass
class ShardData:
    """One shard's rows as a backend hands them to ``fit_shard`` (the rows fitted, in order).

    items : codes (into the plan's items) of the shard's items, ascending; ``seg`` numbers
        the rows' items within them (0..len(items)-1).
    X : the design rows (``DesignSpec.rows``: padded straight from the columns) for GLM
        nuisances, the (n, d) design matrix for flexible ones; ``rows``: the rows of X fitted
        (a boolean mask, positions, or ``slice(None)`` for all).
    split_folds : the fold of each row in the plan's first ``n_repeats`` splits (the first
        may be given by the caller); ``fit_shard`` appends the splits ``n_repeats="auto"``
        adds, drawn with ``fold_of(repeat)`` (split ``repeat``'s folds of the rows fitted,
        as the backend draws its first splits: ``folds.split_seed``).
    block_sizes : per split, the GLM layout's block size (None: from that split's folds; an
        added split takes the last one's).
    balance : the balancing step (``nuisance.balance.balancing_step``) or None.
    groups : unit hashes of the rows (flexible nuisances' early stopping; the variance counts
        a unit's rows in an item as one draw), or None.
    shard_of_item : the GLM fits' own shards (threads of ``cross_fit``), or None.
    """

    items: np.ndarray
    seg: np.ndarray
    t: np.ndarray
    y: np.ndarray
    y_fit: np.ndarray
    X: object
    rows: object
    split_folds: list
    logged_e: np.ndarray | None = None
    balance: object = None
    groups: np.ndarray | None = None
    block_sizes: list | None = None
    shard_of_item: np.ndarray | None = None
    fold_of: object = None


def fit_shard(plan: FitPlan, data: ShardData, reducer=None, *, keep_rows: bool = True,
              keep_fits: bool = True, lockstep: bool = False) -> ShardPart:
    """Fit ``data`` (one shard of whole items) as the plan says -> its ``ShardPart``.

    ``reducer`` couples this shard's pooled fits with the other shards' (None: this shard
    holds every item); ``lockstep`` runs independent fits side by side (the penalty grid's,
    and each fold's propensity and outcome models), so that their reductions travel together
    (one round or all-reduce per step instead of one per fit and step; the same numbers). ``keep_rows``: the per-row
    outputs; ``keep_fits``: the fitted nuisance models (``nuisance_fits_``)."""
    reducer = reducer or Reducer()
    p, device = plan.params, plan.device
    n_seg, n_start = len(data.items), len(data.split_folds)
    seg, t, y = data.seg, data.t, data.y
    on_device = lambda a, kind: read_only_tensor(a, kind, device)
    splits = SplitAverage(p["alpha"])
    converged, n_iter, nuisance_fits, models = {}, 0, [], None
    shift = np.zeros(n_seg)
    propensity, outcome, fits = plan.propensity, plan.outcome, None
    held_out_folds = None  # the folds of an out-of-fold ``held_out`` (flexible nuisances)
    held_out = None  # leave-one-out predictions: the variance of a small log's all-rows estimate
    chosen = (propensity, outcome)
    n_splits, repeat = n_start, 0  # n_repeats="auto" may add splits after the first n_start
    folds_filled, fold_rows = np.full(n_seg, p["n_folds"]), []
    units = (None if data.groups is None else unit_pairs(
        on_device(seg, torch.long),
        on_device(np.unique(data.groups, return_inverse=True)[1].ravel(), torch.long)))
    while repeat < n_splits:
        if repeat == len(data.split_folds):
            data.split_folds.append(data.fold_of(repeat))
        split = data.split_folds[repeat]
        # the folds each item's rows fill (FitPlan.finish: "too_few_units") and each fold's
        # rows (a distributed backend's check_fold_rows)
        per_item = item_fold_rows(seg, split, n_seg, p["n_folds"])
        folds_filled = np.minimum(folds_filled, (per_item > 0).sum(axis=1))
        fold_rows.append(per_item.sum(axis=0))
        if plan.flexible is not None:
            # the learners of split r seeded as a single fit seeded split_seed(seed, r) seeds them;
            # 31 bits: XGBoost takes a long, and each fit offsets this seed
            fit = _fit_flexible(plan, data, split, seed=split_seed(p["seed"], repeat) % 2 ** 31)
            if fit.held_out is not None:  # out of fold: normalised per (item, fold)
                held_out, held_out_folds = fit.held_out, split
            nuisance_fits.append(fit)
            models = fit.models  # the last repeat's choice per nuisance
            n_iter = max(n_iter, fit.glm_n_iter)  # the offset GLMs'
            converged["e"] = converged.get("e", True) & np.full(n_seg, bool(fit.glm_converged))
            preds = (fit.e, fit.mu0, fit.mu1)
        else:
            job = dict(n_folds=p["n_folds"], logged_e=data.logged_e,
                       shard_of_item=data.shard_of_item, device=device, dtype=plan.dtype,
                       warm=fits.shard_fits if fits else None,
                       block_size=data.block_sizes[min(repeat, len(data.block_sizes) - 1)]
                       if data.block_sizes else None)
            args = (data.X, None, None, data.rows, seg, t, data.y_fit, split, n_seg)
            if plan.tune_columns is not None:  # few rows per column: the slopes' ridge by CV
                fits, *chosen = cross_fit_tuned(
                    *args, propensity=propensity, outcome=outcome, family=plan.outcome_family,
                    n_columns=plan.tune_columns, reducer=reducer, lockstep=lockstep,
                    tune_shrinkage=plan.shrinkage_tunable, **job)
                if p["refit_small_logs"]:  # the estimate from the chosen models on every row,
                    # its variance from their approximate leave-one-out predictions
                    every_row = (*args[:7], np.zeros(len(t), dtype=np.int64), n_seg)
                    fits = cross_fit(*every_row, propensity=chosen[0], outcome=chosen[1],
                                     **dict(job, n_folds=1, warm=fits.shard_fits,
                                            block_size=None), loo=True, lockstep=lockstep,
                                     reducer=reducer if data.shard_of_item is None else None)
                    held_out = (fits.loo.get("e", fits.e), fits.loo["mu0"], fits.loo["mu1"])
            else:  # (threads of this process couple the GLM fits' own shards, if any)
                fits = cross_fit(*args, propensity=propensity, outcome=outcome, **job,
                                 reducer=reducer if data.shard_of_item is None else None,
                                 lockstep=lockstep)
            if keep_fits and len(fits.shard_fits) == 1:
                nuisance_fits += fits.shard_fits[0]
            for name, ok in fits.converged.items():
                converged[name] = converged.get(name, True) & ok
            n_iter = max(n_iter, fits.n_iter)
            preds = (fits.e, fits.mu0, fits.mu1)
            fits.e = fits.mu0 = fits.mu1 = fits.loo = None  # only the float64 copies below stay
        e, mu0, mu1 = _restored(plan, preds, device)
        if held_out is not None:
            held_out = _restored(plan, held_out, device)
        if data.balance is not None:  # per item (items are never split between shards)
            e, item_shift = data.balance(e, t, seg, n_items=n_seg)
            shift += item_shift
            if held_out is not None:
                held_out = (data.balance(held_out[0], t, seg, n_items=n_seg)[0], *held_out[1:])
        release_free_heap()  # the fits' freed arrays: not resident beside the score arrays
        splits.add(*plan.scores(on_device(seg, torch.long), on_device(t, None),
                                on_device(y, torch.float64), e, mu0, mu1, n_seg,
                                folds=on_device(split, None), held_out=held_out,
                                held_out_folds=None if held_out_folds is None
                                else on_device(held_out_folds, None), units=units), e, mu0, mu1)
        preds = e = mu0 = mu1 = held_out = None  # not alive beside the next split's fits
        repeat += 1
        if repeat == n_start and plan.max_repeats > n_start:  # the same on every shard
            n_splits = _splits_for_noise(plan, splits.tables, reducer, n_start)
    shift /= n_splits
    table, psi, e_clipped, e, mu0, mu1 = splits.result()
    rows = None
    if keep_rows:
        rows = dict(psi=psi, e_clipped=e_clipped, e=e.cpu().numpy(), mu0=mu0.cpu().numpy(),
                    mu1=mu1.cpu().numpy())
    return ShardPart(
        items=np.asarray(data.items), table=table, converged=converged, n_iter=n_iter,
        reductions=(getattr(reducer, "n_calls", 0), getattr(reducer, "seconds", 0.0)),
        shared_penalty={name: tuned_penalty(model) for name, model in
                        zip(("propensity", "outcome"), chosen) if model is not None},
        shrinkage={name: model.shrinkage for name, model in
                   zip(("propensity", "outcome"), chosen) if model is not None and model.pooled},
        balance_shift=shift, rows=rows, nuisance_fits=nuisance_fits, nuisance_models=models,
        n_repeats=n_splits, folds_filled=folds_filled, fold_rows=np.stack(fold_rows))


def _splits_for_noise(plan: FitPlan, tables, reducer, n_start: int) -> int:
    """``n_repeats="auto"``'s split count from the first ``n_start`` splits' tables: the
    split-noise share pooled over the items of every shard (one reduction), so that every
    shard (and the local fit) draws the same number of splits."""
    sums = reducer.sum(torch.as_tensor(split_noise_sums(tables), dtype=torch.float64))
    total, count = (float(v) for v in sums.cpu())
    share = total / count if count > 0 else float("nan")
    return repeats_for_split_noise(share, n_start, plan.max_repeats)


def _restored(plan: FitPlan, preds, device):
    """(e, mu0, mu1) in float64 on ``device``, the outcome predictions on y's own scale."""
    e, mu0, mu1 = [torch.as_tensor(a, device=device).to(torch.float64) for a in preds]
    return e, plan.outcome_scale.restore(mu0), plan.outcome_scale.restore(mu1)


def _fit_flexible(plan: FitPlan, data: ShardData, split, seed: int):
    """Cross-fitted predictions of flexible learners (``causalrec.nuisance``) for one split;
    ``data.groups`` (unit hashes or None) keep each unit's rows on one side of early
    stopping's split. -> ``NuisanceResult``."""
    from ..nuisance import cross_fit_nuisances
    p = plan.params
    glm = dict(shrinkage=plan.shrinkage, intercept_penalty=p["intercept_penalty"],
               max_iter=p["max_iter"])
    X = data.X[data.rows]
    small = tunes_shared_penalty(plan.n_independent, X.shape[1])
    if small:  # few rows (units) per column:
        # the offset GLM's shared-slope penalty chosen from the GLM path's grid per nuisance
        glm["shared_penalty"] = penalty_grid(X.shape[1])
        if plan.shrinkage_tunable:  # and then the deviations' ridge, where it has items
            glm["shrinkage_grid"] = shrinkage_grid(X.shape[1])
    return cross_fit_nuisances(X, data.seg.astype(np.int64), data.t.astype(np.int64),
                               data.y_fit.astype(np.float64), split.astype(np.int64),
                               n_items=len(data.items), family=plan.outcome_family,
                               spec=plan.flexible, glm=glm, logged_e=data.logged_e,
                               device=plan.device, groups=data.groups, seed=seed,
                               refit=small and p["refit_small_logs"])
