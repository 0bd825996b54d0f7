"""Per-item causal effects of a recommendation: AIPW / IPW / outcome regression for all items
in one batched, cross-fitted pass."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..base import BaseEstimator
from ..glm import SegmentGLM
from ..glm.layout import read_only_tensor, release_free_heap, resolve_device, resolve_dtype
from ..schema import InteractionLog, SchemaError
from .design import DesignSpec, segment_ids
from .folds import FoldAssigner, check_folds, narrow_codes, unit_key, warn_unit_like
from .nuisance import (MODEL_NAMES, cross_fit, cross_fit_tuned, pack_shards, tunes_shared_penalty,
                       warn_unconverged)
from .params import PARAMETER_CONSTRAINTS
from .scaling import outcome_for_fits
from .splits import SplitAverage
from .scores import NO_ESTIMATE, NO_OVERLAP, effects_table, post_status, pre_status
from .results import EffectResults

__all__ = ["ItemEffectEstimator", "resolve_device", "resolve_shrinkage"]

NUISANCE = ("pooled", "per_item")  # the GLM nuisances; the other choices are flexible learners
AUTO_SHRINKAGE_PER_COLUMN = 1.0
AUTO_REPEAT_ROWS = 4_000_000  # n_repeats="auto" (pooled): repeats x fitted rows within this


def resolve_shrinkage(shrinkage, n_columns: int) -> float:
    """The pooled models' penalty on item deviations; "auto" grows with the dimension."""
    return float(AUTO_SHRINKAGE_PER_COLUMN * max(1, n_columns) if shrinkage == "auto" else shrinkage)


class ItemEffectEstimator(EffectResults, BaseEstimator):
    """Average effect of recommending each item, estimated for all items at once.

    Parameters
    ----------
    method : "aipw" (doubly robust, default), "ipw" (Hajek-normalised) or "or" (outcome
        regression). Every method reports influence-function standard errors.
    normalize : AIPW averages its residual correction with normalised weights,
        sum w (y - mu) / sum w per arm, instead of dividing by n (default True). Still doubly
        robust, but a few extreme weights can no longer swing an item's estimate; its standard
        error uses HC3 residuals (a row's leverage: its share of its arm's weight), so a
        dominant weight cannot hide its own residual.
        False gives textbook AIPW.
    nuisance : "pooled" (default): one model over all rows with item intercepts and item
        slopes shrunk toward shared slopes; "per_item": independent ridge models per item;
        "boosted": gradient-boosted models on top of the pooled GLM (large items get their
        own, kept where they win out of fold); "factorised": low-rank item slopes (items
        share a few taste directions of the confounders, e.g. text topics) on top of the
        pooled GLM, for tail items too small for slopes of their own
        (``causalrec.nuisance.FactorisedLearner``); "auto": per nuisance, the out-of-fold-loss
        stack of the GLM, the boosted and the factorised models; a scikit-learn estimator or a pair
        (propensity, outcome) of them; or a ``causalrec.nuisance.FlexibleNuisance`` with
        settings (see ``causalrec.nuisance``).
    n_folds : cross-fitting folds, stratified by item and arm, or by unit when the log has a
        ``unit`` role (1 disables cross-fitting).
    n_repeats : independent cross-fitting splits, each with its own folds, out-of-fold
        predictions and per-item estimates, averaged (``causalrec.estimate.splits``: the
        variance is that of an average: mean var_s + split_sd^2 / n_repeats; ``split_sd`` in
        the effects table is the splits' spread); costs ``n_repeats`` times the fits. "auto"
        (default): 4 for ``nuisance="per_item"``, whose own-item models make the split noise
        large (RMSE -16%, calibrated intervals; benchmarks/README.md, issue 14); 4 for
        "pooled" while the fitted rows times the repeats stay within 4M (1M rows: 4, 2M: 2,
        above 4M: 1; a 1M-row fit then takes ~3.5x as long), which takes the median
        seed-to-seed move of an estimate from 0.36 to 0.09 SE (issue 28; seeds s and s + 1
        share all splits but one: with disjoint splits 0.27 -> 0.16 SE,
        tests/test_seed_stability.py); 1 for the
        flexible nuisances (each repeat refits their boosters) and when ``fit(folds=...)``
        fixes the split (a number > 1 there adds seeded splits to the given one).
    penalty : per_item ridge penalty on slopes (scikit-learn's ``C = 1 / penalty``).
    shrinkage : pooled ridge penalty on an item's deviation from the shared slopes. "auto"
        (default) uses ``d`` for d confounder columns: with standardised columns the
        prior spread of an item's deviation on the linear-predictor scale is then the same
        whatever d is (a fixed penalty lets 64 free deviations per item overfit, driving
        propensities to the clip and inflating the variance threefold in the benchmark).
    intercept_penalty : ridge on item intercepts; tiny, it only keeps one-arm items finite.
    outcome_model : "auto" (logistic for 0/1 outcomes, else linear), "logistic", "linear".
    clip : propensities are clipped into [clip, 1 - clip] (rows clipped are counted).
    trim : if set, rows with propensity outside [trim, 1 - trim] are dropped from the item's
        estimate (the estimand becomes the effect on the overlap population).
    min_rows_per_arm : items with fewer treated or control rows get status "too_few_rows".
    min_ess : items whose effective sample size in either arm is below this get status
        "poor_overlap" (estimates are still reported).
    max_clipped : items where more than this share of rows have a clipped propensity, or
        whose arms' propensity ranges do not meet, get status "no_overlap" (numbers NaN,
        overlap diagnostics kept: ``share_clipped``, each arm's propensity range and
        ``share_outside_support``): without overlap an effect is an extrapolation.
    alpha : 1 - confidence level of the intervals. Intervals and p-values use Student t
        with the item's ``dof`` column: Welch-Satterthwaite degrees of freedom over the arms
        (each arm's share of the variance, its Kish effective size), or for 0/1 outcomes
        with ``normalize`` the moderated variance's ``PRIOR_DOF`` + HC3's own; the smaller
        arm's rows - 1 where neither is finite; normal for large items
        (``causalrec.estimate.scores``).
    text_encoder, text_components : how text columns become confounders.
    balance_penalty : with text confounders and a fitted propensity (AIPW / IPW), each item's
        cross-fitted propensity is calibrated along the text components so that its arms
        balance on them (``causalrec.nuisance.balance``), with this ridge on the
        calibration's slopes; None: off. "auto" (default): 10, except for
        ``nuisance="per_item"``: models that shrink an item's slopes toward shared ones
        (pooled, factorised, boosted) leave a tail item's remainder along those columns
        (share of the naive bias removed on 16 text-confounded logs: pooled 0.79 -> 0.88), while
        per_item's own lightly-ridged slopes already balance them and a second calibration
        only fits noise (0.92 -> 0.87; benchmarks/README.md, issue 14).
    balance_columns : "text" (default: the text components and pair cosines) or a list of
        numeric confounders and text columns to balance along (e.g. user embedding columns
        that carry a user x item match).
    device : "auto" (CUDA when present), "cpu", "cuda", ... ; dtype : "float32" / "float64".
    seed : fixes the cross-fitting folds.
    max_iter : most Newton-type steps per nuisance fit (two Newton steps, then chord steps that
        reuse the last Hessian). An item whose fits stop here has ``converged`` False in the
        effects table, and a ``ConvergenceWarning`` names the model and the items.
    shards : 1 (default), a number S of shards, or one shard id per item (in the effects
        table's order). With S > 1 items are bin-packed by row count into S shards, each fitted
        by its own solver in its own thread; the pooled models' coupling goes through the
        engine's reducer, so the result equals the unsharded fit (up to rounding). It is how a
        distributed backend runs the fit, and on a many-core machine it fits shards in parallel.

    Attributes
    ----------
    effects_ : DataFrame, one row per item (see ``estimate_item_effects``).
    propensity_, mu0_, mu1_, psi_, fold_ : Series aligned with the log's rows (NaN / -1 for
        items that could not be estimated): fitted propensity (clipped), outcome predictions
        under control / treatment, influence values, cross-fitting fold.
    split_folds_ : per cross-fitting split (``n_repeats``), the fold of each fitted row
        (the rows where ``propensity_`` is not NaN, in order); the first is ``fold_``'s.
    design_columns_ : names of the confounder columns the models used.
    shared_penalty_ : ridge on the pooled models' shared slopes, per model ("propensity",
        "outcome"): chosen by out-of-fold loss where rows are few per column
        (``causalrec.estimate.nuisance.tunes_shared_penalty``), else the near-zero default.
    balance_shift_ : per item, the size of the balancing step's calibration |gamma_k| (logit
        units per within-item sd of the text components; mean over splits; 0 where it does
        not apply).
    nuisance_fits_ : per fold, the fitted ``SegmentGLM`` of each nuisance model (flexible
        nuisances: per repeat, a ``causalrec.nuisance.NuisanceResult``). A continuous
        outcome's models are fitted on ``(y - outcome_scale_.center) / outcome_scale_.scale``.
    outcome_scale_ : ``causalrec.estimate.scaling.OutcomeScale``: the centre and scale
        (float64) a continuous outcome is fitted on, so that float32 fits keep the float64
        answer for any offset or unit of y; centre 0, scale 1 for a 0/1 outcome.
    nuisance_models_ : flexible nuisances only: per nuisance, out-of-fold losses of the GLM,
        pooled and flexible models, the stacking weight and the items with own models (a
        continuous outcome's squared errors in units of its variance: the fits see it
        standardised, ``outcome_scale_``).
    propensity_calibration_ : binned calibration table of the fitted (unclipped) propensity.
    """

    _parameter_constraints = PARAMETER_CONSTRAINTS  # estimate/params.py: also the CLI's choices

    def __init__(self, *, method="aipw", normalize=True, nuisance="pooled", n_folds=2,
                 n_repeats="auto", penalty=1.0, shrinkage="auto", intercept_penalty=1e-3,
                 outcome_model="auto", clip=0.01, trim=None, min_rows_per_arm=10, min_ess=5.0,
                 alpha=0.05, text_encoder=None, text_components=8, balance_penalty="auto",
                 balance_columns="text", device="auto", dtype="float32", seed=0, max_iter=50,
                 shards=1, max_clipped=0.3):
        self.method = method
        self.normalize = normalize
        self.nuisance = nuisance
        self.n_folds = n_folds
        self.n_repeats = n_repeats
        self.penalty = penalty
        self.shrinkage = shrinkage
        self.intercept_penalty = intercept_penalty
        self.outcome_model = outcome_model
        self.clip = clip
        self.trim = trim
        self.min_rows_per_arm = min_rows_per_arm
        self.min_ess = min_ess
        self.alpha = alpha
        self.text_encoder = text_encoder
        self.text_components = text_components
        self.balance_penalty = balance_penalty
        self.balance_columns = balance_columns
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.max_iter = max_iter
        self.shards = shards
        self.max_clipped = max_clipped

    # ------------------------------------------------------------------ fitting
    def fit(self, log: InteractionLog, folds=None) -> "ItemEffectEstimator":
        """Estimate every item's effect from a validated ``InteractionLog``.

        ``folds`` (optional, one integer in [0, n_folds) per row) fixes the cross-fitting
        folds, e.g. to re-use ``fold_`` of an earlier fit when refuting it; by default they
        are drawn from a seeded hash of each row's content (see ``assign_folds``), or of its
        unit when the log has a ``unit`` role (``unit_folds``: a unit's rows share one fold
        in every split, and the flexible nuisances' early-stopping rows are whole units too).
        """
        self._validate_params()
        self._flexible = None
        self.unit_ = getattr(log, "unit", None)
        if self.nuisance not in NUISANCE:  # its own checks name what is wrong (predict_proba, ...)
            from ..nuisance import resolve_nuisance
            self._flexible = resolve_nuisance(self.nuisance)
            self._flexible.learners()
            if not (isinstance(self.shards, (int, np.integer)) and self.shards == 1):
                raise ValueError("shards needs nuisance='pooled' or 'per_item'")
        if not isinstance(log, InteractionLog):
            raise TypeError("fit expects an InteractionLog; use estimate_item_effects for a DataFrame")
        device, dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        df = log.data
        keys = log.item_columns
        seg, self.segments_ = segment_ids(df, keys)
        n_seg = len(self.segments_)
        seg = narrow_codes(seg, n_seg)  # per-row arrays in the narrowest exact dtype (memory)
        # the frame's own columns when they are plain numbers (no row copies), else converted
        t = _native(df[log.treatment], "iu", np.int64)
        y = _native(df[log.outcome], "iuf", np.float64)
        n_t = np.bincount(seg, weights=t, minlength=n_seg).astype(np.int64)
        n_all = np.bincount(seg, minlength=n_seg)
        status = pre_status(n_t, n_all - n_t, self.min_rows_per_arm)
        use = (status == "ok")[seg]
        if use.any() and np.ptp(y[use]) == 0:  # nothing to model: no fit (it cannot converge)
            status[status == "ok"] = "constant_outcome"
            use[:] = False

        n_use = int(use.sum())
        # the rows in use: a mask (1 byte a row), or a slice when all are (views, no copies)
        rows = slice(None) if n_use == len(df) else use
        in_use = lambda a: a[rows]
        text_features = self._text_features(log)
        # moments, levels and the 0/1 check from the rows that are fitted (all rows if none)
        # (all rows in use: no gathered copies of the columns)
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        spec = DesignSpec.from_log(log, text_features,
                                   rows=rows if 0 < n_use < len(df) else None, dtype=np_dtype)
        self.design_spec_ = spec
        self.design_columns_, self.dropped_columns_ = list(spec.columns), list(spec.dropped)
        self.shrinkage_ = resolve_shrinkage(self.shrinkage, len(spec.columns))
        binary = log.outcome_is_binary  # one scan of the outcome column
        self.outcome_family_ = self._outcome_family(log, binary)
        content = keys + log.confounders + log.categorical + log.text
        unit = None if log.unit is None else df[log.unit]
        if folds is None:
            warn_unit_like(log, seg)
        # the rows' seed-free hashes once, for every repeat's seed
        assigner = FoldAssigner(df, content, seg, t, y, self.n_folds, item_columns=keys, unit=unit)
        fold_of = lambda seed: assigner(seed, warn_duplicates=seed == self.seed)
        n_repeats = self._n_repeats(n_use, folds_given=folds is not None)
        folds = narrow_codes(fold_of(self.seed) if folds is None
                             else check_folds(folds, len(df), self.n_folds), self.n_folds)
        # every repeat's split, then the rows in use of each row array, formed once (the fits
        # and the effects table read the same copies; the whole-log item ids are freed)
        split_folds = [in_use(folds)] + [in_use(narrow_codes(fold_of(self.seed + r), self.n_folds))
                                         for r in range(1, n_repeats)]
        assigner = None  # its row hashes (32 bytes a row) are not kept beside the fits
        seg, t, y = in_use(seg), in_use(t), in_use(y)
        # the fits see a continuous outcome centred and scaled in float64 (float32 cannot
        # hold y + 1e8); their predictions come back in the outcome's units (scaling.py)
        self.outcome_scale_, y_fit = outcome_for_fits(y, self.outcome_family_, np_dtype,
                                                      log.outcome)
        groups = None if unit is None or self._flexible is None else in_use(unit_key(unit))
        # the GLM fits pad the design rows straight from the frame's columns (standardised in
        # float64, then cast): no (n, d) design matrix beside the padded one; flexible
        # learners take the matrix of the rows in use
        X = (spec.rows(log, text_features, dtype=np_dtype) if self._flexible is None
             else spec.transform(log, text_features, dtype=np_dtype).X)
        standardise = (None, None)
        logged_e = (None if log.propensity is None
                    else in_use(df[log.propensity].to_numpy(dtype=np.float64)))
        shard_of_item = self._shard_of_item(np.bincount(seg, minlength=n_seg), n_seg)
        from ..nuisance.balance import balancing_step
        balance = balancing_step(spec, df, text_features, rows, penalty=self._balance_penalty(),
                                 columns=self.balance_columns, method=self.method,
                                 fitted_propensity=log.propensity is None)
        shift = np.zeros(n_seg)
        # Each repeat (split) has its own folds, out-of-fold predictions and effects table;
        # the tables are combined (splits.py): averaging the estimates removes the noise of
        # one particular split.
        fits = None
        self.nuisance_fits_, converged = [], {}
        propensity, outcome = self._nuisance_models(log.propensity is None)
        # rows of a recurring unit are not independent: the shared slopes' ridge is gated
        # on the units in use, else 100 copies of 747 units pass as 74,700 rows (issue 28)
        self._n_independent = n_use if unit is None else len(np.unique(in_use(unit_key(unit))))
        tune = (isinstance(self.nuisance, str) and self.nuisance == "pooled"
                and tunes_shared_penalty(self._n_independent, len(spec.columns)))
        on_device = lambda a, kind: read_only_tensor(a, kind, device)
        splits = SplitAverage(self.alpha)
        for repeat, split in enumerate(split_folds if n_use else split_folds[:1]):
            if not n_use:  # no item is estimable: statuses only, no fit
                self.n_iter_ = 0
                preds = [torch.zeros(0, dtype=torch.float64, device=device)] * 3
            elif self._flexible is not None:
                preds = self._fit_flexible(X, rows, seg.astype(np.int64), t.astype(np.int64),
                                           y_fit.astype(np.float64), split.astype(np.int64),
                                           n_seg, logged_e, device, converged, groups)
            else:
                job = dict(n_folds=self.n_folds, logged_e=logged_e, shard_of_item=shard_of_item,
                           device=device, dtype=dtype, warm=fits.shard_fits if fits else None)
                if tune:  # few rows per column: shared slopes' ridge by CV, in each split
                    fits, *self._tuned = cross_fit_tuned(
                        X, *standardise, rows, seg, t, y_fit, split, n_seg, propensity=propensity,
                        outcome=outcome, family=self.outcome_family_,
                        n_columns=len(spec.columns), **job)
                else:
                    fits = cross_fit(X, *standardise, rows, seg, t, y_fit, split, n_seg,
                                     propensity=propensity, outcome=outcome, **job)
                self.nuisance_fits_ += fits.shard_fits[0] if len(fits.shard_fits) == 1 else []
                for name, ok in fits.converged.items():
                    converged[name] = converged.get(name, True) & ok
                self.n_iter_ = max(getattr(self, "n_iter_", 0) if repeat else 0, fits.n_iter)
                preds = (fits.e, fits.mu0, fits.mu1)
                fits.e = fits.mu0 = fits.mu1 = None  # only the float64 copies below stay
            e, mu0, mu1 = [torch.as_tensor(p, device=device).to(torch.float64) for p in preds]
            mu0, mu1 = self.outcome_scale_.restore(mu0), self.outcome_scale_.restore(mu1)
            if balance is not None and n_use:
                e, item_shift = balance(e, t, seg, n_items=n_seg)
                shift += item_shift / len(split_folds)
            release_free_heap()  # the fits' freed arrays: not resident beside the score arrays
            splits.add(*effects_table(on_device(seg, torch.long), on_device(t, None),
                                      on_device(y, torch.float64), e, mu0, mu1, n_seg,
                                      self.method, self.clip, self.trim, self.alpha,
                                      binary=binary, normalize=self.normalize,
                                      folds=on_device(split, None)), e, mu0, mu1)
            preds = e = mu0 = mu1 = None  # not alive beside the next split's fits
        table, psi, e_clipped, e, mu0, mu1 = splits.result()
        chosen = self._tuned if tune and n_use else (propensity, outcome)  # the last split's
        self.shared_penalty_ = {name: model.shared_penalty for name, model in
                                zip(("propensity", "outcome"), chosen) if model is not None}
        mu0, mu1 = mu0.cpu().numpy(), mu1.cpu().numpy()
        self._finish(table, status, n_all, n_t, converged, keys, device)
        index = df.index
        self.propensity_ = _row_series(index, rows, e_clipped, "propensity")
        self.mu0_ = _row_series(index, rows, mu0, "mu0")
        self.mu1_ = _row_series(index, rows, mu1, "mu1")
        self.psi_ = _row_series(index, rows, psi, "psi")
        self.fold_ = pd.Series(folds.astype(np.int64), index=index, name="fold")
        self.split_folds_ = split_folds
        self.balance_shift_ = pd.Series(shift, index=self.effects_.set_index(self._keys()).index,
                                        name="balance_shift")
        from ..nuisance import calibration_table
        self.propensity_calibration_ = calibration_table(e.cpu().numpy(), t)
        self.log_ = log
        return self

    def _per_item(self) -> bool:  # the "auto" rules of n_repeats and balance_penalty
        return isinstance(self.nuisance, str) and self.nuisance == "per_item"

    def _n_repeats(self, n_rows: int, folds_given: bool = False) -> int:
        """The repeats of a fit of ``n_rows`` fitted rows (see ``n_repeats``)."""
        if self.n_repeats != "auto":
            return self.n_repeats
        if folds_given:  # the caller's split is the split
            return 1
        if self._per_item():
            return 4
        if not (isinstance(self.nuisance, str) and self.nuisance == "pooled"):
            return 1  # the flexible nuisances
        return int(np.clip(AUTO_REPEAT_ROWS // max(n_rows, 1), 1, 4))

    def _balance_penalty(self):
        if self.balance_penalty == "auto":
            return None if self._per_item() else 10.0
        return self.balance_penalty

    def _finish(self, table, status, n_all, n_t, converged, keys, device) -> None:
        """``effects_`` and ``converged_`` from the per-item ``effects_table`` of all items
        (in ``segments_`` order), their pre-fit statuses and counts, and the per-model
        convergence of each item (the one ending of every backend's fit)."""
        item_names = self.segments_[keys[0]].to_numpy()
        for name, ok in converged.items():  # items without rows in use have nothing to fit
            warn_unconverged(ok | (status != "ok"), item_names, MODEL_NAMES[name] + " model")
        item_converged = np.logical_and.reduce(list(converged.values())) if converged \
            else np.ones(len(status), dtype=bool)
        self.converged_ = bool(item_converged[status == "ok"].all())
        table["status"] = post_status(status, table, self.min_ess, self.max_clipped)
        no_number = table["status"].isin(NO_ESTIMATE + (NO_OVERLAP,))
        table.loc[no_number, ["ate", "se", "ci_low", "ci_high", "p_value", "split_sd"]] = np.nan
        table.loc[table["status"] == "constant_outcome", ["se", "ci_low", "ci_high", "p_value"]] = np.nan
        table["n"], table["n_treated"], table["n_control"] = n_all, n_t, n_all - n_t
        table["converged"] = item_converged | np.isin(table["status"], NO_ESTIMATE)
        item_frame = self.segments_.rename(columns={keys[0]: "item"})
        self.effects_ = pd.concat([item_frame, table], axis=1)[_column_order(item_frame, table)]
        self.effects_.attrs.update(method=self.method, normalize=self.normalize,
                                   nuisance=self.nuisance,
                                   n_folds=self.n_folds, seed=self.seed, device=str(device),
                                   unit=getattr(self, "unit_", None),
                                   outcome_model=self.outcome_family_)

    def _text_features(self, log: InteractionLog) -> pd.DataFrame | None:
        if not log.text:
            self.text_confounders_ = None
            return None
        from ..confounders import TextConfounders
        self.text_confounders_ = TextConfounders(encoder=self.text_encoder,
                                                 n_components=self.text_components)
        return self.text_confounders_.fit_transform(log.data, log.text)

    def _outcome_family(self, log: InteractionLog, binary: bool) -> str:
        if self.outcome_model == "logistic":
            if not binary:
                raise SchemaError(log.outcome, "outcome_model='logistic' needs a 0/1 outcome")
            return "logistic"
        if self.outcome_model == "linear":
            return "gaussian"
        return "logistic" if binary else "gaussian"

    def _nuisance_models(self, fit_propensity: bool):
        """Unfitted propensity (None for a logged one) and outcome models."""
        device, dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        common = dict(pooled=self.nuisance == "pooled", penalty=self.penalty,
                      shrinkage=self.shrinkage_, intercept_penalty=self.intercept_penalty,
                      max_iter=self.max_iter, tol=1e-6, device=device, dtype=dtype)
        propensity = SegmentGLM(family="logistic", **common) if fit_propensity else None
        return propensity, SegmentGLM(family=self.outcome_family_, **common)

    def _fit_flexible(self, X, rows, seg, t, y, folds, n_seg, logged_e, device, converged, groups):
        """Cross-fitted predictions of flexible learners (see ``causalrec.nuisance``); the
        offset GLMs' convergence joins ``converged`` under the name "e" (all items); ``groups``
        (unit hashes or None) keep each unit's rows on one side of early stopping's split."""
        from ..nuisance import cross_fit_nuisances
        glm = dict(shrinkage=self.shrinkage_, intercept_penalty=self.intercept_penalty,
                   max_iter=self.max_iter)
        if tunes_shared_penalty(self._n_independent, X.shape[1]):  # few rows (units) per
            glm["shared_penalty"] = self.shrinkage_  # column: the offset GLM's shared slopes
            # get the deviations' prior
        fit = cross_fit_nuisances(X[rows], seg, t, y, folds, n_items=n_seg,
                                  family=self.outcome_family_, spec=self._flexible,
                                  glm=glm, logged_e=logged_e, device=device, groups=groups,
                                  seed=self.seed + len(self.nuisance_fits_))
        self.nuisance_fits_.append(fit)
        self.nuisance_models_ = fit.models  # last repeat's choice per nuisance
        self.n_iter_ = max(r.glm_n_iter for r in self.nuisance_fits_)  # the offset GLMs'
        converged["e"] = converged.get("e", True) & np.full(n_seg, bool(fit.glm_converged))
        return fit.e, fit.mu0, fit.mu1

    def _shard_of_item(self, rows_per_item, n_items):
        if isinstance(self.shards, (int, np.integer)):
            return None if self.shards == 1 else pack_shards(rows_per_item, int(self.shards))
        shards = np.asarray(self.shards, dtype=np.int64)
        if len(shards) != n_items:
            raise ValueError(f"shards must hold one shard id per item ({n_items}), got {len(shards)}")
        return np.unique(shards, return_inverse=True)[1]  # ids 0..S-1, every shard non-empty


def _column_order(item_frame, table):
    head = ["ate", "se", "ci_low", "ci_high", "p_value", "n", "n_treated", "n_control", "status"]
    rest = [c for c in table.columns if c not in head]
    return list(item_frame.columns) + head + rest


def _native(values: pd.Series, kinds: str, dtype) -> np.ndarray:
    """A column as its own numpy array when its dtype is of these kinds, else as ``dtype``."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in kinds:
        return values.to_numpy()
    return values.to_numpy(dtype=dtype)


def _row_series(index, rows, values, name):
    out = np.full(len(index), np.nan)
    out[rows] = values
    return pd.Series(out, index=index, name=name)
