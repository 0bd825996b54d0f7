"""Cross-fitted nuisance models (propensity, outcome under each arm) for all items at once.

Rows are laid out once in cells ordered (fold, arm, item), so every model's blocks form a few
contiguous runs; each fold fits the propensity on its training rows and one outcome model per
arm, then predicts the held-out fold. Items can be split into shards, each fitted by its own
solver in its own thread and coupled through the engine's reducer: the result equals the
whole fit (the pattern a distributed backend runs, one task per shard).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..exceptions import ConvergenceWarning
from ..glm import BlockedDesign, SegmentGLM, ThreadReducer
from ..glm.layout import (block_size_for, pad, read_only_tensor, release_free_heap,
                          resolve_dtype, segment_sum)
from ..glm.passes import block_grams
from ..glm.reducer import Reducer
from ..utils.tensors import at_rows
from .lockstep import run_in_lockstep

__all__ = ["CrossFit", "cross_fit", "cross_fit_tuned", "pack_shards", "blocked_arm",
           "tunes_shared_penalty", "tuned_penalty", "shrinkage_grid"]

MODEL_NAMES = {"e": "propensity", "mu0": "outcome (control)", "mu1": "outcome (treated)"}
# ``lockstep`` fits a shard's folds side by side only where every training design together
# holds at most this many values (256 MB in float32): above it the fits' arithmetic, not
# the reductions' latency, sets the time, and one design at a time keeps the memory low
FOLDS_IN_LOCKSTEP_VALUES = 2 ** 26


@dataclass
class CrossFit:
    """Out-of-fold predictions for the rows in use; per shard, per fold, the fitted models
    (``SegmentGLM`` by name "e", "mu0", "mu1"; segments numbered within the shard); whether
    every model of each item converged."""

    e: torch.Tensor
    mu0: torch.Tensor
    mu1: torch.Tensor
    shard_items: list      # per shard: the item codes it holds (its segment k is items[k])
    shard_fits: list       # per shard: per fold {name: SegmentGLM}
    converged: dict        # model name -> (n_items,) bool
    n_iter: int
    loo: dict | None = None  # ``cross_fit(loo=True)``: leave-one-out predictions by name


def pack_shards(rows_per_item: np.ndarray, n_shards: int) -> np.ndarray:
    """Shard id per item: items bin-packed by row count, largest first, each onto the shard
    with the fewest rows so far (a giant item gets a shard of its own; no item is split)."""
    load = np.zeros(n_shards, dtype=np.int64)
    out = np.empty(len(rows_per_item), dtype=np.int64)
    for item in np.argsort(-np.asarray(rows_per_item), kind="stable"):
        shard = int(np.argmin(load))
        out[item] = shard
        load[shard] += rows_per_item[item]
    return out


def cross_fit(X, center, scale, rows, seg, t, y, folds, n_seg, *, n_folds: int,
              propensity: SegmentGLM | None, outcome: SegmentGLM, logged_e=None,
              shard_of_item: np.ndarray | None = None, device, dtype, warm: list | None = None,
              reducer: Reducer | None = None, block_size: int | None = None,
              loo: bool = False, lockstep: bool = False) -> CrossFit:
    """Cross-fitted (e, mu0, mu1) for ``rows`` of X (positions, a boolean mask, or
    ``slice(None)`` for all; seg, t, y, folds already subset to them).

    X is an (n, d) array or a row source (``DesignSpec.rows``: the padded designs are then
    read straight from the frame's columns). ``propensity`` / ``outcome`` are unfitted
    ``SegmentGLM`` prototypes (their parameters are copied for every fit);
    ``propensity=None`` uses ``logged_e``. ``warm`` holds an earlier cross-fit's models to
    start from (e.g. another repeat's first fold). ``reducer`` couples these items' pooled
    fits with other processes' (a Spark task's shard; default: these are all the items);
    ``shard_of_item`` instead splits them into shards fitted by threads of this process.
    ``block_size``: the layout's (default: from these rows' cells). ``loo`` (one fold, the
    models fitted on every row): also each model's approximate leave-one-out predictions
    (``SegmentGLM.loo_predict_blocks``) on the rows it was fitted on, its plain predictions
    on the others (an outcome model's other arm), as ``CrossFit.loo``. ``lockstep``: each
    fold's models (e, mu0, mu1), and the folds where they are independent and small
    (``FOLDS_IN_LOCKSTEP_VALUES``), fitted side by side with their reductions sent together
    (``lockstep.run_in_lockstep``): fewer rounds or all-reduces on Spark, the same numbers.
    """
    if loo and n_folds != 1:
        raise ValueError("loo=True needs n_folds=1 (the models fitted on every row)")
    if reducer is not None and shard_of_item is not None:
        raise ValueError("cross_fit takes a reducer or shard_of_item, not both")
    if block_size is None:
        block_size = block_size_for(np.bincount((folds.astype(np.int64) * 2 + t) * n_seg + seg,
                                                minlength=n_seg * n_folds * 2))
    if not hasattr(X, "gather_into"):
        X = read_only_tensor(X, dtype, device).contiguous()  # GPUs reorder X themselves
    out = {}
    if logged_e is not None:
        out["e"] = torch.as_tensor(logged_e, dtype=dtype, device=device)
    job = dict(X=X, center=center, scale=scale, rows=rows, seg=seg, t=t, y=y, folds=folds,
               n_folds=n_folds, n_items=n_seg, propensity=propensity, outcome=outcome,
               block_size=block_size, device=device, loo=loo, lockstep=lockstep)
    if shard_of_item is None or int(np.max(shard_of_item, initial=0)) == 0:
        shards = [np.arange(n_seg)]
        results = [_fit_shard(shards[0], reducer or Reducer(), warm[0] if warm else None, **job)]
    else:
        n_shards = int(np.max(shard_of_item)) + 1
        shards = [np.flatnonzero(shard_of_item == s) for s in range(n_shards)]
        starts = warm or [None] * n_shards
        results = ThreadReducer(n_shards).run(
            lambda shard, red: _fit_shard(shard[0], red, shard[1], **job), list(zip(shards, starts)))
    converged, out_loo = {}, {}
    for items, (mine, preds, fits, loo_preds) in zip(shards, results):
        for target, values_of in ((out, preds), (out_loo, loo_preds or {})):
            for name, values in values_of.items():
                if isinstance(mine, slice):  # the whole run: its predictions are the output
                    target[name] = values
                else:
                    empty = torch.full((len(seg),), float("nan"), dtype=values.dtype, device=device)
                    target.setdefault(name, empty)[mine] = values
        for name in preds:
            ok = converged.setdefault(name, np.ones(n_seg, dtype=bool))
            for models in fits:
                ok[items] &= models[name].converged_
    n_iter = max((m.n_iter_ for r in results for models in r[2] for m in models.values()),
                 default=0)
    return CrossFit(out.get("e"), out["mu0"], out["mu1"], shards, [r[2] for r in results],
                    converged, n_iter, loo=out_loo if loo else None)


# The pooled models' shared slopes are nearly unpenalised, which is right when rows are many
# per column; with few (one item of a few hundred rows, 25 columns) the propensity overfits,
# the treated arm's effective size collapses and clipping takes over (issue 28). There the
# shared-slope ridge is chosen per nuisance by out-of-fold loss over this grid (times the
# number of columns d: with standardised columns, d keeps the prior spread of the linear
# predictor fixed whatever d is, the same scaling as ``shrinkage="auto"``). Up to 64d: with
# a top of 4d the propensity took the top in 29 of 30 IHDP replications (a grid edge that
# binds is no choice); up to 64d, RMSE A 0.136 -> 0.132, B 0.159 -> 0.155 (256d: no gain).
SHARED_PENALTY_GRID = (0.0, 0.25, 1.0, 4.0, 16.0, 64.0)
# Where the shared slopes' ridge is tuned and the log has several items, the outcome models'
# ridge on the items' deviations (``shrinkage``, d by default) is chosen next from d x this
# grid: their surfaces may differ by item far more than d allows (IHDP, 100 replications
# stacked with unit=, a surface per replication: d/16 chosen, pooled RMSE A 0.139 -> 0.132,
# interval width 1.46x -> 1.29x the oracle's; benchmarks/README.md, session 43). The
# propensity keeps d: chosen by log loss it smoothed ACIC's (4d) and the boosted path's bias
# rose 0.057 -> 0.076, the under-smoothing trade-off of session 36. Nothing above d: a larger
# ridge pins each item's deviations and leaves what an item's arm cannot identify (a level
# with no treated rows) to the near-unpenalised shared slopes, which then extrapolate freely
# (a Spark test's log: mu1 of 4 such rows 12.8 apart in float32 and float64, 0.43 SE).
SHRINKAGE_GRID = (1 / 16, 1 / 4, 1.0)
TUNE_ROWS_PER_COLUMN = 500  # beyond this a ridge of 4d moves the fit by < 1% (4d / n)


def tunes_shared_penalty(n_rows: int, n_columns: int) -> bool:
    """Whether the shared-slope penalty is chosen from the data (few rows per column)."""
    return n_rows < TUNE_ROWS_PER_COLUMN * (n_columns + 1)


def cross_fit_tuned(X, center, scale, rows, seg, t, y, folds, n_seg, *, propensity, outcome,
                    family: str, n_columns: int, reducer: Reducer | None = None,
                    lockstep: bool = False, tune_shrinkage: bool = False, **options):
    """``cross_fit`` once per penalty of ``tuned_grid`` (``SHARED_PENALTY_GRID`` x d: the
    pooled models' shared slopes, or per_item's own slopes from its ``penalty`` up); the
    propensity keeps the penalty with the lowest out-of-fold log loss, the outcome models the
    one with the lowest out-of-fold loss of mu0 on control rows plus mu1 on treated rows.
    With ``tune_shrinkage`` (pooled models, several items) the outcome models' ridge on the
    items' deviations is chosen next the same way, from ``shrinkage_grid`` at the chosen
    shared penalty; the untuned value wins ties (``SHRINKAGE_GRID``: why not the
    propensity's).
    The one penalty-tuning loop: ``reducer`` adds the loss sums of every process's items
    (a Spark task's shard; identity in one process), so every shard makes the same choice;
    ``lockstep`` fits the grid side by side with their reductions sent together
    (``lockstep.run_in_lockstep``: fewer rounds on Spark without barrier mode, same numbers).
    Returns the combined ``CrossFit`` and the two prototypes with the chosen penalties (for
    later repeats)."""
    reducer = reducer or Reducer()
    coupled = options.get("shard_of_item") is None  # else the shards' threads couple the fits

    def fit_all(pairs):
        """Each (propensity, outcome) pair cross-fitted -> the fits, their summed losses."""
        fit = lambda pair, red: cross_fit(X, center, scale, rows, seg, t, y, folds, n_seg,
                                          propensity=pair[0], outcome=pair[1],
                                          reducer=red if coupled else None, lockstep=lockstep,
                                          **options)
        if lockstep:
            fits = run_in_lockstep([lambda red, pair=pair: fit(pair, red) for pair in pairs],
                                   reducer)
        else:
            fits = [fit(pair, reducer) for pair in pairs]
        sums = np.stack([tuning_losses(f.e, f.mu0, f.mu1, t, y, family) for f in fits])
        return fits, reducer.sum(torch.as_tensor(sums, dtype=torch.float64)).cpu().numpy()

    pairs = [(with_penalty(propensity, lam), with_penalty(outcome, lam))
             for lam in tuned_grid(outcome, n_columns)]
    fits, total = fit_all(pairs)
    best_e, best_mu = choose_penalties(total, propensity is not None)
    e, mu = fits[best_e], fits[best_mu]
    chosen = [pairs[best_e][0], pairs[best_mu][1]]
    if tune_shrinkage and outcome.pooled:  # the outcome models' (the propensity keeps its)
        values = [s for s in shrinkage_grid(n_columns) if s != outcome.shrinkage]
        pairs = [(None, with_shrinkage(chosen[1], s)) for s in values]
        more, more_total = fit_all(pairs)
        # row 0: the shared penalty's choice, at the untuned deviations' ridge
        best = choose_penalties(np.vstack([total[best_mu], more_total]), False)[1]
        if best:
            mu, chosen[1] = more[best - 1], pairs[best - 1][1]
    shard_fits = [merge_models(e_shard, mu_shard)
                  for e_shard, mu_shard in zip(e.shard_fits, mu.shard_fits)]
    converged = {name: (e if name == "e" else mu).converged[name] for name in mu.converged}
    combined = CrossFit(e.e, mu.mu0, mu.mu1, mu.shard_items, shard_fits, converged,
                        max(e.n_iter, mu.n_iter))
    return combined, *chosen


def penalty_grid(n_columns: int, smallest: float = 1e-4) -> list:
    """The penalties tried, in order (``SHARED_PENALTY_GRID`` x d, at least ``smallest``:
    a per-item model's own ``penalty``, where the shared slopes' is near zero)."""
    return list(dict.fromkeys(max(c * n_columns, smallest) for c in SHARED_PENALTY_GRID))


def shrinkage_grid(n_columns: int) -> list:
    """The items' deviations' ridges tried (``SHRINKAGE_GRID`` x d), in order."""
    return [c * max(1, n_columns) for c in SHRINKAGE_GRID]


def tuned_grid(model, n_columns: int) -> list:
    """``penalty_grid`` for a GLM prototype: a pooled model's shared slopes from near zero,
    a per-item model's slopes from its own ``penalty`` (its untuned value) up."""
    return penalty_grid(n_columns) if model.pooled else penalty_grid(n_columns, model.penalty)


def with_penalty(model, penalty):
    """A copy of the GLM prototype with this tuned penalty (None stays None): a pooled
    model's ridge on its shared slopes, a per-item model's on each item's slopes."""
    if model is None:
        return None
    return model.clone().set_params(**{"shared_penalty" if model.pooled else "penalty": penalty})


def with_shrinkage(model, shrinkage):
    """A copy of the GLM prototype with this ridge on the items' deviations (None stays
    None)."""
    return None if model is None else model.clone().set_params(shrinkage=shrinkage)


def tuned_penalty(model):
    """The penalty ``with_penalty`` sets, read back."""
    return model.shared_penalty if model.pooled else model.penalty


def merge_models(e_fits: list, mu_fits: list) -> list:
    """Per fold, the outcome models of one fit with the propensity model of another."""
    return [{**mu, **({"e": e["e"]} if "e" in e else {})} for e, mu in zip(e_fits, mu_fits)]


def tuning_losses(e, mu0, mu1, t, y, family: str) -> np.ndarray:
    """Out-of-fold loss sums and row counts behind the penalty choice: propensity log loss,
    rows; loss of mu0 on control rows, their count; of mu1 on treated rows, their count.
    Sums (not means), so that shards' values add up to the whole log's (Spark)."""
    t64, y64 = np.asarray(t, np.float64), np.asarray(y, np.float64)
    treated = t64 == 1
    as_np = lambda a: np.asarray(a.double().cpu().numpy() if hasattr(a, "cpu") else a, np.float64)
    e = np.full(len(t64), 0.5) if e is None else as_np(e)  # logged propensities: not chosen
    mu0, mu1 = as_np(mu0), as_np(mu1)
    return np.array([_loss_sum(e, t64, "logistic"), len(t64),
                     _loss_sum(mu0[~treated], y64[~treated], family), (~treated).sum(),
                     _loss_sum(mu1[treated], y64[treated], family), treated.sum()], np.float64)


def choose_penalties(sums: np.ndarray, fit_propensity: bool) -> tuple[int, int]:
    """Indices into the grid of the propensity's and the outcome models' penalties: the
    lowest mean out-of-fold loss (``sums``: one row of ``tuning_losses`` per penalty)."""
    mean = lambda s, n: np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    mu_loss = mean(sums[:, 2], sums[:, 3]) + mean(sums[:, 4], sums[:, 5])
    best_mu = int(np.argmin(mu_loss))
    best_e = int(np.argmin(mean(sums[:, 0], sums[:, 1]))) if fit_propensity else best_mu
    return best_e, best_mu


def _loss_sum(pred: np.ndarray, y: np.ndarray, family: str) -> float:
    """Summed log loss (logistic) or squared error (gaussian); 0 for no rows."""
    if family == "logistic":
        p = np.clip(pred, 1e-6, 1 - 1e-6)
        return float(-np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))
    return float(np.sum((y - pred) ** 2))


def _fit_shard(items, reducer, warm, *, X, center, scale, rows, seg, t, y, folds, n_folds,
               n_items, propensity, outcome, block_size, device=None, loo=False,
               lockstep=False):
    """One solver's share: the rows of ``items``, renumbered 0..len(items)-1; ``warm`` is an
    earlier cross-fit of the same shard (its first fold's models start every fold).

    Each fold's models are fitted on a padded design of the training folds' rows only; after
    the last fit each fold's models predict on one of its held-out rows. One design is alive
    at a time (with two folds: half the rows; the second fold's training design is the first
    one's test design).
    Blocks keep their order and runs, so the fits equal those on one design of all rows.
    ``loo`` (one fold): also the models' leave-one-out predictions (``cross_fit``), blocked
    while the fold's design and outcome are at hand. ``lockstep``: the models fitted side by
    side as ``cross_fit`` says (folds side by side: every training design alive at once)."""
    if len(items) == n_items:  # the whole run: no renumbering, views of the row arrays
        mine, local_seg = slice(None), seg
    else:
        code = np.full(n_items, -1, dtype=np.int64)
        code[items] = np.arange(len(items))
        mine = np.flatnonzero(code[seg] >= 0)
        local_seg = code[seg[mine]]
    n_seg = len(items)
    device = X.device if torch.is_tensor(X) else torch.device(device or "cpu")
    dtype = X.dtype if torch.is_tensor(X) else resolve_dtype(str(X.dtype))
    t_mine, y_mine, f_mine = t[mine], y[mine], folds[mine]
    n_mine = len(t_mine)
    held = {}

    def rows_of_X(sub):
        """Rows of X of the shard's rows ``sub`` (None: exactly X's rows); positions of a
        mask of rows in use are formed here, only while a design is padded."""
        if isinstance(rows, slice):  # every row of X is in use
            at = sub if isinstance(mine, slice) else mine[sub]
        else:
            at = (np.flatnonzero(rows) if rows.dtype == bool else rows)[mine][sub]
        return None if len(at) == X.shape[0] else torch.as_tensor(at, device=device)

    def padded(fold_set) -> dict:
        """Padded design of the rows in ``fold_set``, with their arm and outcome blocked."""
        member = np.zeros(n_folds, dtype=bool)  # (a lookup: np.isin sorts the rows)
        member[list(fold_set)] = True
        sub = np.flatnonzero(member[f_mine]) if len(fold_set) < n_folds else np.arange(n_mine)
        # (fold, arm, item); folds may come narrow (int8): the cell number needs int64
        cells = (f_mine[sub].astype(np.int64) * 2 + t_mine[sub]) * n_seg + local_seg[sub]
        design = BlockedDesign(
            X, cells, n_seg * n_folds * 2, cell_segment=np.tile(np.arange(n_seg), 2 * n_folds),
            center=center, scale=scale, block_size=block_size, device=device,
            index=rows_of_X(sub))
        return dict(folds=fold_set, design=design, sub=sub, tb=blocked_arm(design, n_seg, dtype),
                    yb=pad(design.layout, torch.as_tensor(y_mine[sub], device=device,
                                                          dtype=_blocked_dtype(y_mine, dtype))))

    def design_of(fold_set):
        """``padded(fold_set)``, kept until another set is asked for."""
        if held.get("folds") != fold_set:
            held.clear()  # the old design is freed before the new one is padded
            held.update(padded(fold_set))
            release_free_heap()  # the padding's freed temporaries: not resident beside the fits
        return held

    def fit_fold(part, first, red):
        """One fold's models on its training design ``part``; ``first``: the first fold's
        models (None for the first fold) -> (models, outcome scale, leave-one-out blocks)."""
        design, tb, yb = part["design"], part["tb"], part["yb"]
        train = design.blocks()
        block_arm = (design.block_cell // n_seg) % 2
        # Later folds of three or more (and later repeats) start Newton from the first fold's
        # fits: the same model on many shared rows, close to their optimum. With two folds
        # the other fold's fits share no training row and start as far away as a cold start
        # (an item's deviations fit the other half's noise); a cold start's first Hessian
        # needs no pass: the arms' X'X (one pass for the three models) times the start's
        # variance. (The same rule in every shard: starts must agree across the reducer.)
        cold = not warm and (n_folds == 2 or first is None)
        start = {} if cold else (warm[0] if warm else first)
        grams = _arm_grams(design, block_arm, n_seg) if cold else None
        fitted_on, jobs = {}, {}  # name -> (prototype, outcome, blocks, first Hessian)
        if propensity is not None:
            fitted_on["e"] = (tb, train)
            jobs["e"] = (propensity, None if grams is None else grams[0] + grams[1])
        y_fit, y_back = _outcome_scale(design, yb, train, n_seg, outcome)
        for arm in (0, 1):
            fitted_on[f"mu{arm}"] = (y_fit, design.blocks(block_arm == arm))
            jobs[f"mu{arm}"] = (outcome, None if grams is None else grams[arm])
        fit_one = lambda name, r: jobs[name][0].clone().fit_blocks(
            design, *fitted_on[name], n_segments=n_seg, init=start.get(name), reducer=r,
            first_gram=jobs[name][1])
        if lockstep:  # the fold's models side by side, their reductions sent together
            fitted = run_in_lockstep([lambda r, n=n: fit_one(n, r) for n in jobs], red)
        else:
            fitted = [fit_one(name, red) for name in jobs]
        models = dict(zip(jobs, fitted))
        loo_blocked = None
        if loo:  # one fold: this design holds every row, in the test design's blocks
            loo_blocked = {name: _loo_blocked(model, design, *fitted_on[name], red)
                           for name, model in models.items()}
        return models, y_back, loo_blocked

    train_sets = [frozenset(range(n_folds)) - {f} if n_folds > 1 else frozenset({0})
                  for f in range(n_folds)]
    width = X.shape[1] if len(X.shape) > 1 else 1
    if (lockstep and n_folds > 1 and (n_folds == 2 or warm)
            and n_mine * (width + 1) <= FOLDS_IN_LOCKSTEP_VALUES):
        # the folds side by side too (independent where no fold starts from another's):
        # every training design alive at once, so only where they are small, which is where
        # a reduction's latency outweighs the fits' arithmetic
        parts = [padded(fold_set) for fold_set in train_sets]
        results = run_in_lockstep([lambda r, part=part: fit_fold(part, None, r)
                                   for part in parts], reducer)
        del parts
        release_free_heap()
    else:
        results = []
        for fold_set in train_sets:
            results.append(fit_fold(design_of(fold_set), results[0][0] if results else None,
                                    reducer))
    fits, scales = [r[0] for r in results], [r[1] for r in results]
    loo_blocked = results[0][2]
    del results
    # the held-out folds' predictions after every fit (none is alive beside a solver's
    # buffers); with two folds the last training design is the first test design. Each
    # prediction goes straight to its rows' places in the row arrays (the padded slots'
    # positions among the shard's rows, found once per test design).
    preds = {name: torch.empty((n_mine,), dtype=dtype, device=device) for name in fits[0]}
    loo_preds = {name: torch.empty((n_mine,), dtype=torch.float64, device=device)
                 for name in fits[0]} if loo else None
    for f, (models, y_back) in enumerate(zip(fits, scales)):
        part = design_of(frozenset({f}))
        design, test = part["design"], part["design"].blocks()
        slots = torch.nonzero(design.layout.valid.reshape(-1)).squeeze(1)
        at = at_rows(torch.as_tensor(part["sub"], device=device),
                     at_rows(design.layout.rows.reshape(-1), slots).long())
        for name, model in models.items():
            for target, pred in ((preds, model.predict_blocks(design, test)),
                                 (loo_preds, loo_blocked[name] if loo else None)):
                if pred is None:
                    continue
                if name != "e" and y_back is not None:
                    pred = pred * y_back[0][design.block_seg].unsqueeze(1) \
                        + y_back[1][design.block_seg].unsqueeze(1)
                values = at_rows(pred.reshape(-1), slots).to(target[name].dtype)
                target[name].index_copy_(0, at, values)
            del pred
        del design, part
    held.clear()
    return mine, preds, fits, loo_preds


def _loo_blocked(model: SegmentGLM, design: BlockedDesign, y_blocked, blocks, reducer):
    """A model's predictions on every block of ``design`` (float64), leave-one-out on the
    ``blocks`` it was fitted on (``y_blocked``: the outcome it saw)."""
    pred = model.predict_blocks(design, design.blocks()).to(torch.float64)
    pred[blocks] = model.loo_predict_blocks(design, y_blocked, blocks, reducer=reducer)
    return pred


def _arm_grams(design: BlockedDesign, block_arm: torch.Tensor, n_seg: int):
    """(2, n_seg, p, p): each arm's X'X per item over the design's blocks (the first Hessian
    of cold fits, ``fit_glm``'s ``first_gram``), or None when they and the propensity's sum
    of them would take more than half the padded design's memory (many items with few rows
    each: the fits' own Gram passes are then cheap)."""
    p = design.X.shape[-1]
    if 3 * n_seg * p * p > design.X.numel() // 2:
        return None
    group = block_arm * n_seg + design.block_seg
    return block_grams(design.X, design.blocks(), group, 2 * n_seg).view(2, n_seg, p, p)


def _blocked_dtype(y: np.ndarray, dtype):
    """A one-byte integer outcome (0/1 clicks) stays one byte in the blocks: the fits compute
    with it in float, exactly (5.5 MB instead of 22 MB at 10M rows); else ``dtype``."""
    return None if y.dtype.kind in "iu" and y.dtype.itemsize == 1 else dtype


def blocked_arm(design: BlockedDesign, n_seg: int, dtype) -> torch.Tensor:
    """t in the blocked layout of a design whose cells are (fold, arm, item): each block's
    arm, as a broadcast view (no padded copy; on padding the block's arm too, which a fit
    only reads times a weight of 0)."""
    arm = ((design.block_cell // n_seg) % 2).to(dtype)
    return arm[:, None].expand(design.X.shape[:2])


def _outcome_scale(design, yb, train, n_seg, outcome: SegmentGLM):
    """A pooled linear outcome model sees each item's outcome centred and scaled by its own
    training rows' mean and standard deviation: one item's scale (values x 1000) must not
    move the shared slopes, and so the other items' estimates. Returns the outcome to fit
    and (scale, centre) per item to map predictions back (None when nothing is rescaled)."""
    if outcome.family != "gaussian" or not outcome.pooled:
        return yb, None
    seg = design.block_seg[train]
    w, y = design.weight[train], yb[train]
    n = segment_sum((w).sum(1), seg, n_seg)
    mean = segment_sum((w * y).sum(1), seg, n_seg) / n.clamp(min=1)
    var = segment_sum((w * (y - mean[seg].unsqueeze(1)) ** 2).sum(1), seg, n_seg) / n.clamp(min=1)
    scale = torch.where(var > 0, var.sqrt(), torch.ones_like(var))
    scaled = (yb - mean[design.block_seg].unsqueeze(1)) / scale[design.block_seg].unsqueeze(1)
    return scaled, (scale, mean)


def warn_unconverged(converged: np.ndarray, item_names, model: str) -> None:
    """One ConvergenceWarning naming the model and (up to ten of) the items."""
    bad = np.flatnonzero(~converged)
    if len(bad):
        names = ", ".join(str(item_names[i]) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        warnings.warn(f"{model}: {len(bad)} item(s) stopped at max_iter before converging "
                      f"({names}); raise max_iter, or check these items' data",
                      ConvergenceWarning, stacklevel=3)
