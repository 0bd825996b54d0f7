"""The local backend: the rows are a pandas log in this process.

It hands ``fit_shard`` one shard holding every item, read from the frame's own columns (no
copies where a column is already numbers; the rows fitted as a mask, or all of them); the GLM
fits may still be split into shards fitted by threads (``shards``), coupled through the
engine's ``ThreadReducer`` inside ``cross_fit``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..schema import InteractionLog, Roles
from .design import segment_ids
from .folds import (FoldAssigner, check_folds, check_split, fold_content, narrow_codes,
                    split_seed, unit_key, warn_unit_like)
from .nuisance import pack_shards
from .plan import FitPlan, ShardPart, native_column
from .shardfit import ShardData

__all__ = ["LocalBackend"]


class LocalBackend:
    """Rows in this process: ``log`` (an ``InteractionLog``), ``extra`` its text components
    (or None), ``folds`` the caller's first split (or None: seeded from the rows' content or
    units, ``assign_folds``). After ``run``: ``folds`` (every row's first-split fold),
    ``split_folds`` (per split, the fitted rows' folds) and ``rows`` (the fitted rows: a mask,
    or ``slice(None)`` for all)."""

    distributed = False

    def __init__(self, log: InteractionLog, extra: pd.DataFrame | None = None, folds=None):
        self.log, self.extra, self.given_folds = log, extra, folds

    def run(self, plan: FitPlan, fit_shard) -> list[ShardPart]:
        """``[fit_shard(plan, data)]`` for one shard of every item (none if no item is
        fitted)."""
        data = self.shard_data(plan)
        if data is None:
            return []
        return [fit_shard(plan, data)]

    def shard_data(self, plan: FitPlan) -> ShardData | None:
        """The one shard's ``ShardData`` (None when no item is fitted); sets ``folds``,
        ``split_folds`` and ``rows``."""
        log, p = self.log, plan.params
        df, keys = log.data, log.item_columns
        n_seg, n_folds, seed = plan.n_items, p["n_folds"], p["seed"]
        seg, _ = segment_ids(df, keys)
        seg = narrow_codes(seg, n_seg)  # per-row arrays in the narrowest exact dtype (memory)
        # the frame's own columns when they are plain numbers (no row copies), else converted
        t = native_column(df[log.treatment], "iu", np.int64)
        y = native_column(df[log.outcome])
        use = plan.facts.use[seg]
        n_use = int(use.sum())
        # the rows in use: a mask (1 byte a row), or a slice when all are (views, no copies)
        self.rows = rows = slice(None) if n_use == len(df) else use
        in_use = lambda a: a[rows]
        content = fold_content(keys, log.confounders, log.categorical, log.text,
                               propensity=log.propensity)
        unit = None if log.unit is None else df[log.unit]
        if self.given_folds is None:
            warn_unit_like(log, seg)
        # the rows' seed-free hashes once, for every repeat's seed
        assigner = FoldAssigner(df, content, seg, t, y, n_folds, item_columns=keys, unit=unit)
        fold_of = lambda s: assigner(s, warn_duplicates=s == seed)
        folds = fold_of(seed) if self.given_folds is None \
            else check_folds(self.given_folds, len(df), n_folds)
        self.folds = narrow_codes(folds, n_folds)
        # every repeat's split, then the rows in use of each row array, formed once (the fits
        # and the effects table read the same copies; the whole-log item ids are freed)
        given = self.given_folds is not None

        def fitted_split(folds, given=False):  # the rows in use of a split, two folds filled
            folds = in_use(folds)
            check_split(folds, n_folds, log.unit, given)
            return folds

        self.split_folds = [fitted_split(self.folds, given)] + [
            fitted_split(narrow_codes(fold_of(split_seed(seed, r)), n_folds))
            for r in range(1, plan.n_repeats)]
        assigner.release()  # its row hashes (32 bytes a row) are not kept beside the fits
        # (n_repeats="auto" may add splits: hashed again then, only for those)
        later_folds = lambda r: fitted_split(narrow_codes(fold_of(split_seed(seed, r)), n_folds))
        if not n_use:
            return None
        seg, t, y = in_use(seg), in_use(t), in_use(y)
        y_fit = plan.fit_outcome(y)
        groups = None if unit is None else in_use(unit_key(unit))
        # the GLM fits pad the design rows straight from the frame's columns (standardised in
        # float64, then cast): no (n, d) design matrix beside the padded one; flexible
        # learners take the matrix of the rows in use
        X = (plan.spec.rows(log, self.extra, dtype=plan.np_dtype) if plan.flexible is None
             else plan.spec.transform(log, self.extra, dtype=plan.np_dtype).X)
        logged_e = (None if log.propensity is None
                    else in_use(df[log.propensity].to_numpy(dtype=np.float64)))
        from ..nuisance.balance import balancing_step
        balance = balancing_step(plan.spec, df, self.extra, rows, penalty=plan.balance_penalty,
                                 columns=p["balance_columns"], method=p["method"],
                                 fitted_propensity=log.propensity is None)
        return ShardData(items=np.arange(n_seg), seg=seg, t=t, y=y, y_fit=y_fit, X=X, rows=rows,
                         split_folds=self.split_folds, logged_e=logged_e, balance=balance,
                         groups=groups, fold_of=later_folds, shard_of_item=_shard_of_item(
                             p["shards"], np.bincount(seg, minlength=n_seg)))


def _shard_of_item(shards, rows_per_item):
    """The GLM fits' shard of each item (``shards``: a count or one id per item), or None."""
    n_items = len(rows_per_item)
    if isinstance(shards, (int, np.integer)):
        return None if shards == 1 else pack_shards(rows_per_item, int(shards))
    shards = np.asarray(shards, dtype=np.int64)
    if len(shards) != n_items:
        raise ValueError(f"shards must hold one shard id per item ({n_items}), got {len(shards)}")
    return np.unique(shards, return_inverse=True)[1]  # ids 0..S-1, every shard non-empty
