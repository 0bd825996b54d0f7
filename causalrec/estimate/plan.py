"""The plan of an item-effects fit: everything decided once, before any nuisance model is fitted.

A fit runs in three steps, whatever holds the rows (``causalrec.backend``)::

    plan  = FitPlan.from_log(log, options)         # or .from_facts on Spark (stage 0)
    parts = backend.run(plan, fit_shard)           # one process, or one Spark task per shard
    table = plan.finish(parts)                     # effects table: statuses, convergence

The plan holds the validated parameters, the per-item counts and statuses, the outcome family
and scale, the design spec, the nuisance prototypes and the rules derived from them (repeats,
penalty tuning, balancing). It is small and picklable: Spark ships it to every task.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..glm import SegmentGLM
from ..glm.layout import resolve_device, resolve_dtype
from ..schema import InteractionLog, SchemaError, split_roles  # noqa: F401 (re-exported)
from ..utils.validation import validate_params
from .design import DesignSpec, segment_ids
from .folds import unit_key
from .nuisance import MODEL_NAMES, tunes_shared_penalty, warn_unconverged
from .params import PARAMETER_CONSTRAINTS
from .positivity import one_arm_share, stratum_counts
from .scaling import OutcomeScale, outcome_for_fits
from .scores import (NO_ESTIMATE, NO_OVERLAP, effects_table, post_status, pre_status,
                     split_status)

__all__ = ["FitPlan", "ItemFacts", "ShardPart", "resolve_shrinkage", "resolve_flexible",
           "GLM_NUISANCES", "split_roles", "outcome_family", "n_repeats", "max_repeats",
           "repeats_for_split_noise", "counts_units"]

GLM_NUISANCES = ("pooled", "per_item")  # the other nuisance choices are flexible learners
AUTO_SHRINKAGE_PER_COLUMN = 1.0
AUTO_REPEAT_ROWS = 4_000_000  # n_repeats="auto" (GLMs): repeats x fitted rows within this
AUTO_MAX_REPEATS = 16  # ... and at most this many splits: at most 4x the cost of the first 4
# n_repeats="auto" adds splits until the seed-to-seed gap of an estimate it predicts has a
# standard deviation of at most this many SEs: 3 seeds' estimates of 20 items then stay
# within ~0.25 SE of each other (the largest range of 3 normal draws over 20 items is about
# 3.5 sd; benchmarks/README.md, session 32)
SEED_GAP_TARGET = 0.07


def resolve_shrinkage(shrinkage, n_columns: int) -> float:
    """The pooled models' penalty on item deviations; "auto" grows with the dimension."""
    return float(AUTO_SHRINKAGE_PER_COLUMN * max(1, n_columns) if shrinkage == "auto" else shrinkage)


@dataclass
class ItemFacts:
    """Per-item facts, items in the effects table's (sorted) order: from the pandas log
    (``from_log``) or from Spark aggregations (``causalrec.spark.stage0.item_facts``)."""

    segments: pd.DataFrame    # key columns, one row per item
    n_all: np.ndarray
    n_t: np.ndarray
    status: np.ndarray        # pre-fit status per item ("constant_outcome" applied)
    use: np.ndarray           # item is fitted
    binary: bool              # outcome is 0/1 on every row (log.outcome_is_binary)
    fitted_binary: bool | None = None  # ... on the fitted rows (all rows when none is fitted)
    one_arm_share: np.ndarray | None = None  # rows in one-arm categorical levels (positivity)

    @property
    def arm_rows(self) -> np.ndarray:
        """(n_items, 2): control and treated rows per item."""
        return np.stack([self.n_all - self.n_t, self.n_t], axis=1)

    @property
    def n_fitted(self) -> int:
        return int(self.n_all[self.use].sum())


@dataclass
class ShardPart:
    """What fitting one shard of items returns (``causalrec.estimate.shardfit.fit_shard``):
    its items (codes into the plan's items), their per-item table (the splits combined), the
    per-model convergence of each, Newton steps, reductions (count, seconds), the chosen
    shared-slope penalties, the balancing step's mean |gamma| per item, the per-row outputs
    (float64 numpy, the shard's rows in order; None where not kept), per item the fewest folds
    its rows fill in a split, and per split the rows in each fold."""

    items: np.ndarray
    table: pd.DataFrame
    converged: dict
    n_iter: int = 0
    reductions: tuple = (0, 0.0)
    shared_penalty: dict = field(default_factory=dict)
    shrinkage: dict = field(default_factory=dict)  # the items' deviations' ridge per model
    balance_shift: np.ndarray | None = None
    rows: dict | None = None        # psi, e_clipped, e, mu0, mu1
    nuisance_fits: list = field(default_factory=list)
    nuisance_models: object = None  # flexible nuisances: the last repeat's choice per model
    n_repeats: int = 1              # the cross-fitting splits fitted (n_repeats="auto": grown)
    folds_filled: np.ndarray | None = None  # per item: the fewest folds a split's rows fill
    fold_rows: np.ndarray | None = None     # (splits, n_folds): the shard's rows per fold

    def without_rows(self) -> "ShardPart":
        """The part without its row arrays and fitted models (what a Spark task sends back)."""
        return ShardPart(self.items, self.table, self.converged, self.n_iter, self.reductions,
                         self.shared_penalty, self.shrinkage, self.balance_shift,
                         n_repeats=self.n_repeats,
                         folds_filled=self.folds_filled, fold_rows=self.fold_rows)


@dataclass
class FitPlan:
    """The decisions of one fit (see the module docstring); build with ``from_log`` or
    ``from_facts``, never field by field."""

    params: dict              # ItemEffectEstimator's parameters, validated
    keys: list                # item key columns (item + by)
    facts: ItemFacts
    spec: DesignSpec
    outcome_family: str       # "logistic" or "gaussian"
    outcome_scale: OutcomeScale
    shrinkage: float
    propensity: SegmentGLM | None  # unfitted prototypes (GLM nuisances); None: logged propensity
    outcome: SegmentGLM | None
    n_repeats: int
    tune_columns: int | None  # design columns when the GLMs' penalty is tuned, else None
    balance_penalty: float | None
    unit: str | None
    flexible: object = None   # the resolved FlexibleNuisance (flexible nuisances), else None
    n_independent: int = 0    # fitted rows, or the units among them when the log has a unit role
    max_repeats: int = 1      # n_repeats="auto": the most splits the split noise may add

    # ------------------------------------------------------------------ building
    @staticmethod
    def check_params(params: dict) -> dict:
        """``params`` checked against ``PARAMETER_CONSTRAINTS`` (the estimator's one door)."""
        validate_params(params, PARAMETER_CONSTRAINTS, "ItemEffectEstimator")
        if params["estimand"] == "conditional" and params["method"] == "ipw":
            raise ValueError("estimand='conditional' needs outcome models (method 'aipw' or "
                             "'or'): IPW's error given the confounders includes the arms' "
                             "outcome means, which it does not model")
        return dict(params)

    @classmethod
    def from_log(cls, log: InteractionLog, options, extra: pd.DataFrame | None = None,
                 folds_given: bool = False) -> "FitPlan":
        """The plan of a fit of the pandas ``log`` with ``options``: an
        ``ItemEffectEstimator`` or its ``get_params()`` (``extra``: the log's text
        components, aligned with its rows, or None; ``folds_given``: the caller fixes the
        first split)."""
        params = cls.check_params(options.get_params(deep=False)
                                  if hasattr(options, "get_params") else options)
        df = log.data
        seg, segments = segment_ids(df, log.item_columns)
        n_seg = len(segments)
        t = df[log.treatment].to_numpy(dtype=np.float64)
        n_t = np.bincount(seg, weights=t, minlength=n_seg).astype(np.int64)
        n_all = np.bincount(seg, minlength=n_seg)
        one_arm = one_arm_share([stratum_counts(seg, df[c], t) for c in log.categorical], n_all, n_t)
        del t
        status = pre_status(n_t, n_all - n_t, params["min_rows_per_arm"])
        use_rows = (status == "ok")[seg]
        y = native_column(df[log.outcome])
        if use_rows.any() and np.ptp(y[use_rows]) == 0:  # nothing to model
            status[status == "ok"] = "constant_outcome"
            use_rows[:] = False
        facts = ItemFacts(segments, n_all, n_t, status, status == "ok", log.outcome_is_binary,
                          one_arm_share=one_arm)
        n_use = int(use_rows.sum())
        rows = np.flatnonzero(use_rows) if 0 < n_use < len(df) else None
        np_dtype = np.float64 if resolve_dtype(params["dtype"]) == torch.float64 else np.float32
        # moments, levels and the 0/1 check from the rows that are fitted (all rows if none)
        spec = DesignSpec.from_log(log, extra, rows=rows, dtype=np_dtype)
        family = outcome_family(params["outcome_model"], facts.binary, log.outcome)
        # a continuous outcome is fitted centred and scaled in float64 (scaling.py)
        scale = (outcome_for_fits(y[use_rows], family, np_dtype, log.outcome)[0]
                 if family == "gaussian" else OutcomeScale())
        n_units = (None if log.unit is None or not counts_units(params)
                   else len(np.unique(unit_key(df[log.unit])[use_rows])))
        return cls.from_facts(params, facts, spec, scale, keys=log.item_columns,
                              fit_propensity=log.propensity is None, unit=log.unit,
                              n_independent=n_units,
                              folds_given=folds_given, checked=True)

    @classmethod
    def from_facts(cls, params: dict, facts: ItemFacts, spec: DesignSpec,
                   outcome_scale: OutcomeScale, *, keys: list, fit_propensity: bool,
                   unit=None, n_independent: int | None = None, folds_given: bool = False,
                   outcome_name: str = "outcome",
                   checked: bool = False) -> "FitPlan":
        """The plan from the facts stage 0 found (pandas or Spark: the same rules)."""
        params = params if checked else cls.check_params(params)
        flexible = resolve_flexible(params)
        family = outcome_family(params["outcome_model"], facts.binary, outcome_name)
        shrinkage = resolve_shrinkage(params["shrinkage"], len(spec.columns))
        # the GLM prototypes (flexible nuisances report their shared penalty, as before)
        glm = dict(pooled=_is_pooled(params), penalty=params["penalty"], shrinkage=shrinkage,
                   intercept_penalty=params["intercept_penalty"], max_iter=params["max_iter"],
                   tol=1e-6, device=resolve_device(params["device"]),
                   dtype=resolve_dtype(params["dtype"]))
        propensity = SegmentGLM(family="logistic", **glm) if fit_propensity else None
        outcome = SegmentGLM(family=family, **glm)
        n_fitted = facts.n_fitted
        # rows of a recurring unit are not independent: the shared slopes' ridge is gated on
        # the units in use, else 100 copies of 747 units pass as 74,700 rows (issue 28)
        n_independent = n_fitted if n_independent is None else n_independent
        # per_item: every item's own slopes, so the rows that count are the largest item's
        # (IHDP, one item of 747 rows and 25 columns: penalty 1 overfits, as the shared
        # slopes did)
        tune = (tunes_shared_penalty(n_independent, len(spec.columns)) if _is_pooled(params)
                else _per_item(params) and tunes_shared_penalty(
                    int(facts.n_all[facts.use].max(initial=0)), len(spec.columns)))
        return cls(params=params, keys=list(keys), facts=facts, spec=spec, outcome_family=family,
                   outcome_scale=outcome_scale, shrinkage=shrinkage, propensity=propensity,
                   outcome=outcome,
                   n_repeats=n_repeats(params, n_fitted, folds_given),
                   max_repeats=max_repeats(params, n_fitted, folds_given, tuned=tune),
                   tune_columns=len(spec.columns) if tune else None,
                   balance_penalty=balance_penalty(params), unit=unit, flexible=flexible,
                   n_independent=n_independent)

    # ------------------------------------------------------------------ reading
    @property
    def n_items(self) -> int:
        return len(self.facts.status)

    @property
    def shrinkage_tunable(self) -> bool:
        """Whether the items' deviations' ridge may be chosen by out-of-fold loss where the
        shared slopes' is (``shrinkage="auto"``, more than one item fitted)."""
        return self.params["shrinkage"] == "auto" and int(self.facts.use.sum()) > 1

    @property
    def device(self) -> torch.device:
        return resolve_device(self.params["device"])

    @property
    def dtype(self) -> torch.dtype:
        return resolve_dtype(self.params["dtype"])

    @property
    def np_dtype(self):
        return np.float64 if self.dtype == torch.float64 else np.float32

    def fit_outcome(self, y: np.ndarray) -> np.ndarray:
        """The outcome the nuisance fits see: a continuous one centred and scaled in float64
        (float32 cannot hold y + 1e8; predictions come back through ``outcome_scale``), a
        0/1 one as it is (one byte stays one byte)."""
        return self.outcome_scale.standardise(y) if self.outcome_family == "gaussian" else y

    def scores(self, seg, t, y, e, mu0, mu1, n_seg, folds=None, held_out=None,
               held_out_folds=None, units=None):
        """``effects_table`` with the plan's method, clipping, trimming and level."""
        p = self.params
        return effects_table(seg, t, y, e, mu0, mu1, n_seg, p["method"], p["clip"], p["trim"],
                             p["alpha"], binary=self.facts.binary, normalize=p["normalize"],
                             folds=folds, held_out=held_out, held_out_folds=held_out_folds,
                             estimand=p["estimand"], units=units)

    # ------------------------------------------------------------------ finishing
    def finish(self, parts: list) -> pd.DataFrame:
        """The effects table of all items (one row per item, in ``facts.segments`` order;
        ``all_converged`` reads its ``converged`` column) from the shards' ``ShardPart``s:
        their tables concatenated (items without fitted rows get ``effects_table`` of no
        rows), the splits' and post-fit statuses, counts, NaN where an item has no number; a
        ``ConvergenceWarning`` per model names the items that stopped at max_iter."""
        p, facts, n_seg = self.params, self.facts, self.n_items
        converged, tables, codes = {}, [], []
        folds_filled = np.full(n_seg, p["n_folds"])
        for part in parts:
            tables.append(part.table), codes.append(np.asarray(part.items))
            folds_filled[part.items] = part.folds_filled
            for name, flags in part.converged.items():
                converged.setdefault(name, np.ones(n_seg, dtype=bool))[part.items] &= flags
        missing = np.setdiff1d(np.arange(n_seg), np.concatenate(codes) if codes else [])
        if len(missing) or not tables:
            empty = lambda kind: torch.zeros(0, dtype=kind)
            floats = [empty(torch.float64) for _ in range(5)]
            part, _, _ = self.scores(empty(torch.long), *floats, len(missing))
            tables.append(part.assign(split_sd=np.nan)), codes.append(missing)
        if len(tables) == 1 and len(codes[0]) == n_seg:
            table = tables[0]
        else:
            table = pd.concat(tables, ignore_index=True)
            table.index = np.concatenate(codes)
            table = table.sort_index().reset_index(drop=True)
        status = (split_status(facts.status, folds_filled) if self.own_models_out_of_fold
                  else facts.status)
        item_names = facts.segments[self.keys[0]].to_numpy()
        for name, ok in converged.items():  # items without rows in use have nothing to fit
            warn_unconverged(ok | (status != "ok"), item_names, MODEL_NAMES[name] + " model")
        item_converged = np.logical_and.reduce(list(converged.values())) if converged \
            else np.ones(n_seg, dtype=bool)
        table["share_one_arm_strata"] = (facts.one_arm_share if facts.one_arm_share is not None
                                         else 0.0)
        table["status"] = post_status(status, table, p["min_ess"], p["max_clipped"])
        no_number = table["status"].isin(NO_ESTIMATE + (NO_OVERLAP,))
        table.loc[no_number, ["ate", "se", "ci_low", "ci_high", "p_value", "split_sd"]] = np.nan
        table.loc[table["status"] == "constant_outcome", ["se", "ci_low", "ci_high", "p_value"]] = np.nan
        n_all, n_t = facts.n_all, facts.n_t
        table["n"], table["n_treated"], table["n_control"] = n_all, n_t, n_all - n_t
        table["converged"] = item_converged | np.isin(table["status"], NO_ESTIMATE)
        item_frame = facts.segments.rename(columns={self.keys[0]: "item"})
        effects = pd.concat([item_frame, table], axis=1)[_column_order(item_frame, table)]
        effects.attrs.update(method=p["method"], normalize=p["normalize"], nuisance=p["nuisance"],
                             estimand=p["estimand"],
                             n_folds=p["n_folds"], seed=p["seed"], device=str(self.device),
                             unit=self.unit, outcome_model=self.outcome_family,
                             n_repeats=max([part.n_repeats for part in parts], default=0),
                             shrinkage=next((part.shrinkage for part in parts if part.shrinkage),
                                            {}))
        return effects

    @property
    def own_models_out_of_fold(self) -> bool:
        """Whether an item's estimate reads out-of-fold predictions of models of its own
        (``split_status``): per_item, cross-fitted (not the small-log refit on every row,
        whose estimate reads all-rows fits) with n_folds > 1. Pooled and flexible nuisances
        predict an item's rows with models that other items' rows inform."""
        p = self.params
        refit = self.tune_columns is not None and p["refit_small_logs"]
        return _per_item(p) and p["n_folds"] > 1 and not refit

    def all_converged(self, effects: pd.DataFrame) -> bool:
        """Whether every fitted item's models converged (``finish``'s ``converged`` column
        of the items that were fitted)."""
        return bool(effects["converged"].to_numpy()[self.facts.use].all())


# ---------------------------------------------------------------------- the rules

def resolve_flexible(params: dict):
    """The ``FlexibleNuisance`` of a flexible ``nuisance`` (None for the GLMs), checked: its
    own checks name what is wrong (predict_proba, ...); flexible nuisances take one shard."""
    nuisance = params["nuisance"]
    if isinstance(nuisance, str) and nuisance in GLM_NUISANCES:
        return None
    from ..nuisance import resolve_nuisance
    flexible = resolve_nuisance(nuisance)
    flexible.learners()
    shards = params["shards"]
    if not (isinstance(shards, (int, np.integer)) and shards == 1):
        raise ValueError("shards needs nuisance='pooled' or 'per_item'")
    return flexible


def outcome_family(outcome_model: str, binary: bool, outcome: str) -> str:
    """The outcome models' family: ``outcome_model``, or from the outcome's values ("auto")."""
    if outcome_model == "logistic":
        if not binary:
            raise SchemaError(outcome, "outcome_model='logistic' needs a 0/1 outcome")
        return "logistic"
    if outcome_model == "linear":
        return "gaussian"
    return "logistic" if binary else "gaussian"


def _is_pooled(params) -> bool:
    return isinstance(params["nuisance"], str) and params["nuisance"] == "pooled"


def counts_units(params) -> bool:
    """Whether the fit reads the number of units (the shared-slope gates of the pooled and
    the flexible nuisances); per_item has no shared slopes, so no count is made."""
    return not _per_item(params)


def _per_item(params) -> bool:  # the "auto" rules of n_repeats and balance_penalty
    return isinstance(params["nuisance"], str) and params["nuisance"] == "per_item"


def n_repeats(params: dict, n_rows: int, folds_given: bool = False) -> int:
    """The repeats of a fit of ``n_rows`` fitted rows (see ``ItemEffectEstimator``)."""
    if params["n_repeats"] != "auto":
        return params["n_repeats"]
    if folds_given:  # the caller's split is the split
        return 1
    if _per_item(params):
        return 4
    if not _is_pooled(params):
        return 1  # the flexible nuisances
    return int(np.clip(AUTO_REPEAT_ROWS // max(n_rows, 1), 1, 4))


def max_repeats(params: dict, n_rows: int, folds_given: bool = False,
                tuned: bool = False) -> int:
    """The most splits ``n_repeats="auto"`` may grow to (``repeats_for_split_noise``): for
    the pooled GLM, as many as keep repeats x fitted rows within ``AUTO_REPEAT_ROWS``, at
    most ``AUTO_MAX_REPEATS``, never fewer than the first ones; else the first count. Not
    grown: per_item (its own-item slopes' split noise, ~0.4 SE^2 a split, would always take
    the most), a tuned shared penalty (each split is a grid of fits) and the flexible
    nuisances (each split refits their boosters)."""
    start = n_repeats(params, n_rows, folds_given)
    if params["n_repeats"] != "auto" or folds_given or tuned or not _is_pooled(params):
        return start
    return max(start, min(AUTO_MAX_REPEATS, AUTO_REPEAT_ROWS // max(n_rows, 1)))


def repeats_for_split_noise(share: float, start: int, most: int) -> int:
    """Splits for ``n_repeats="auto"`` after the first ``start``: ``share`` is the split
    noise's variance in units of the items' squared SE (``split_noise_share``), so the
    estimates of two seeds' S-split averages differ by sd sqrt(2 share / S) SE; the fewest S
    that bring it to ``SEED_GAP_TARGET``, within [start, most]."""
    if not np.isfinite(share):
        return start
    needed = int(np.ceil(2.0 * share / SEED_GAP_TARGET ** 2))
    return int(np.clip(needed, start, max(start, most)))


def balance_penalty(params: dict):
    if params["balance_penalty"] == "auto":
        return None if _per_item(params) else 10.0
    return params["balance_penalty"]


def native_column(values: pd.Series, kinds: str = "iuf", dtype=np.float64) -> np.ndarray:
    """A column as its own numpy array when its dtype is of these kinds (no copy), else as
    ``dtype``."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in kinds:
        return values.to_numpy()
    return values.to_numpy(dtype=dtype)


def _column_order(item_frame, table):
    head = ["ate", "se", "ci_low", "ci_high", "p_value", "n", "n_treated", "n_control", "status"]
    rest = [c for c in table.columns if c not in head]
    return list(item_frame.columns) + head + rest
