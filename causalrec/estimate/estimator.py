"""Per-item causal effects of a recommendation: AIPW / IPW / outcome regression for all items
in one batched, cross-fitted pass."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..base import BaseEstimator
from ..glm.layout import resolve_device
from ..schema import InteractionLog
from .local import LocalBackend
from .nuisance import tuned_penalty
from .params import PARAMETER_CONSTRAINTS
from .plan import FitPlan, resolve_flexible, resolve_shrinkage
from .results import EffectResults
from .shardfit import fit_shard

__all__ = ["ItemEffectEstimator", "resolve_device", "resolve_shrinkage"]


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
    n_folds : cross-fitting folds, stratified by item, arm and (0/1 outcomes) click, or by
        unit when the log has a ``unit`` role (1 disables cross-fitting). A split whose
        fitted rows all lie in one fold is a ``ValueError``. With ``nuisance="per_item"``
        cross-fitted, an item whose rows fill one fold of some split (its rows from one
        unit, or from a few that hash alike) gets status "too_few_units" (numbers NaN): its
        own models would predict its rows from none of them; other nuisances' shared models
        still predict it, so it keeps "ok" (``scores.split_status``).
    n_repeats : independent cross-fitting splits (1 to 100), each with its own folds, out-of-fold
        predictions and per-item estimates, averaged (``causalrec.estimate.splits``: the
        variance is that of an average: mean var_s + split_sd^2 / n_repeats; ``split_sd`` in
        the effects table is the splits' spread); costs ``n_repeats`` times the fits. Split r
        of seed s draws its folds with ``folds.split_seed(s, r)``, so nearby seeds share no
        split. "auto" (default): for "pooled", 4 while the fitted rows times the repeats stay
        within 4M (1M rows: 4, 2M: 2, above 4M: 1), then grown by the split noise those
        splits show (the items' mean split_var / se^2, pooled over items) until the
        predicted seed-to-seed gap of an estimate is <= 0.07 SE, within 16 splits and 4M
        row-splits (``plan.repeats_for_split_noise``; the count used: ``n_repeats_``). The
        split noise comes from the item terms of the nuisance models fit on half an item's
        rows (~0.3 SE a 2-fold split; benchmarks/README.md, session 32). 4 for
        ``nuisance="per_item"`` (RMSE -16%, calibrated intervals; issue 14), not grown: its
        own-item slopes' split noise would always take the most; not grown either when the
        shared penalty is tuned (a grid of fits per split). 1 for the flexible nuisances
        (each repeat refits their boosters) and when ``fit(folds=...)`` fixes the split (a
        number > 1 there adds seeded splits to the given one).
    penalty : per_item ridge penalty on slopes (scikit-learn's ``C = 1 / penalty``). Where
        every item is small (its rows under ``TUNE_ROWS_PER_COLUMN`` per column,
        ``causalrec.estimate.nuisance.tunes_shared_penalty``) it is the smallest value tried:
        the propensity's and the outcome models' ridges are chosen by out-of-fold loss from
        it and d x (1/4, 1, 4, 16, 64) (``shared_penalty_`` reports them), as the pooled GLM
        chooses its shared slopes' (IHDP, 747 rows and 25 columns, one item per call: RMSE
        0.223 -> 0.130 on surface A, 0.220 -> 0.139 on B; OLS with interactions 0.129 /
        0.147). The gate reads the largest item, not the log: a large log of small items is
        tuned too, at the pooled small-log cost (six cross-fits per split and the refit).
    shrinkage : pooled ridge penalty on an item's deviation from the shared slopes. "auto"
        (default) uses ``d`` for d confounder columns: with standardised columns the
        prior spread of an item's deviation on the linear-predictor scale is then the same
        whatever d is (a fixed penalty lets 64 free deviations per item overfit, driving
        propensities to the clip and inflating the variance threefold in the benchmark).
        Where the shared slopes' penalty is chosen by out-of-fold loss (few rows or units
        per column) and more than one item is fitted, "auto" chooses the outcome models'
        too, from d x (1/16, 1/4, 1) at the chosen shared penalty (per split;
        flexible nuisances: their offset GLMs'), d winning ties:
        surfaces may differ by item far more than d allows (IHDP, 100 replications stacked
        with ``unit=``, a surface per replication: d/16 chosen; pooled RMSE A 0.139 -> 0.132,
        widths 1.46x -> 1.29x the oracle's). The propensity keeps d (chosen by log loss it
        over-smooths: ``causalrec.estimate.nuisance.SHRINKAGE_GRID``). ``shrinkage_``
        reports the values used.
    intercept_penalty : ridge on item intercepts; tiny, it only keeps one-arm items finite.
    outcome_model : "auto" (logistic for 0/1 outcomes, else linear), "logistic", "linear".
    clip : propensities are clipped into [clip, 1 - clip] (rows clipped are counted); for
        an item whose treated (or control) rows are under 10% of its rows that side's bound
        is a tenth of the arm's share instead (``scores.clip_bounds``): an item recommended
        to 0.5% of users has propensities near 0.005 by design, not for lack of overlap.
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
    estimand : what the intervals are for (the estimates are the same). "population"
        (default): the average effect over users drawn as the logged ones were (the
        influence values' variance, which includes how the effect varies over the
        confounders). "conditional": the average effect over the logged rows' confounders as
        they are, the question "what did recommending the item do to these users" (the
        variance of the residual terms alone, as a regression's with fixed covariates, e.g.
        OLS's). Narrower where effects vary over users (IHDP surface B: width 0.73 -> 0.52,
        benchmarks/README.md); needs outcome models (method "aipw" or "or").
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
    refit_small_logs : where the GLM's penalty is chosen by out-of-fold loss (few rows per
        column, ``shared_penalty_``; pooled and per_item), the chosen models are refitted on
        every row and the estimate is formed from those fits, its variance from their
        approximate leave-one-out predictions (``SegmentGLM.loo_predict_blocks``; default
        True). A parametric GLM with many rows per parameter needs no cross-fitting for
        validity, and cross-fitting costs a small log half its rows: IHDP, one item of 747
        rows per call, RMSE 0.143 -> 0.130 (surface A; OLS with interactions 0.129) and
        0.146 -> 0.141 (B; OLS 0.147) (benchmarks/README.md, session 32). The leave-one-out
        variance (session 33): IHDP-A coverage 0.95 per call, 0.97 stacked, interval widths
        1.19x / 1.46x the oracle AIPW's (the out-of-fold fits' variance: 1.47x / 1.82x,
        coverage 0.97 / 0.99). The flexible nuisances do the same for the items too small
        for models of their own (under ``min_item_rows`` training rows in a fold): their
        offset GLMs are refitted on every row and the out-of-fold flexible corrections
        (prediction minus out-of-fold offset, link scale) added (IHDP, 100 items stacked
        with unit=: boosted RMSE 0.190 -> 0.140 on A, 0.176 -> 0.128 on B; session 33), the
        variance from the same corrections on the all-rows GLM's leave-one-out predictor
        (IHDP-A per call: widths 1.42x -> 1.19x the oracle's, coverage 0.97 -> 0.96;
        session 39); large items stay out of fold. The per-row outputs are then the
        all-rows fits' (not out of fold); False keeps every split cross-fitted.

    Attributes
    ----------
    effects_ : DataFrame, one row per item (see ``estimate_item_effects``).
    propensity_, mu0_, mu1_, psi_, fold_ : Series aligned with the log's rows (NaN / -1 for
        items that could not be estimated): fitted propensity (clipped), outcome predictions
        under control / treatment, influence values, cross-fitting fold. Where the small-log
        refit applies (``refit_small_logs``; the summary's "Estimate from" line says so)
        these are the all-rows fits' values: ``psi_``'s item means are the estimates, but
        the SEs come from the fits' leave-one-out predictions, not from ``psi_``.
    split_folds_ : per cross-fitting split (``n_repeats_``), the fold of each fitted row
        (the rows where ``propensity_`` is not NaN, in order); the first is ``fold_``'s.
    n_repeats_ : the cross-fitting splits averaged (``n_repeats="auto"``: as grown).
    design_columns_ : names of the confounder columns the models used.
    shared_penalty_ : ridge on the pooled models' shared slopes (per_item: on each item's
        slopes), per model ("propensity", "outcome"): chosen by out-of-fold loss where rows
        are few per column (``causalrec.estimate.nuisance.tunes_shared_penalty``), else the
        default (pooled: near zero; per_item: ``penalty``).
    shrinkage_ : ridge on an item's deviation from the pooled models' shared slopes, per
        model ("propensity", "outcome"): chosen by out-of-fold loss where ``shrinkage="auto"``
        tunes it (see ``shrinkage``), else the given or "auto" value.
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
                 shards=1, max_clipped=0.3, refit_small_logs=True, estimand="population"):
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
        self.refit_small_logs = refit_small_logs
        self.estimand = estimand

    # ------------------------------------------------------------------ fitting
    def fit(self, log: InteractionLog, folds=None) -> "ItemEffectEstimator":
        """Estimate every item's effect from a validated ``InteractionLog``.

        ``folds`` (optional, one integer in [0, n_folds) per row) fixes the cross-fitting
        folds, e.g. to re-use ``fold_`` of an earlier fit when refuting it; by default they
        are drawn from a seeded hash of each row's content (its keys, confounders and logged
        propensity, never names or column order; see ``assign_folds``), or of its
        unit when the log has a ``unit`` role (``unit_folds``: a unit's rows share one fold
        in every split, and the flexible nuisances' early-stopping rows are whole units too).

        The fit is the plan / shards / finish skeleton (``causalrec.estimate.plan``) that the
        Spark path runs too: ``FitPlan.from_log``, then ``fit_shard`` on the local backend
        (``causalrec.estimate.local``), then ``FitPlan.finish``.
        """
        self._validate_params()
        resolve_flexible(self.get_params(deep=False))  # its own checks name what is wrong
        self.unit_ = getattr(log, "unit", None)
        if not isinstance(log, InteractionLog):
            raise TypeError("fit expects an InteractionLog; use estimate_item_effects for a DataFrame")
        text_features = self._text_features(log)
        plan = FitPlan.from_log(log, self, text_features, folds_given=folds is not None)
        backend = LocalBackend(log, text_features, folds)
        parts = backend.run(plan, fit_shard)
        self.record_fit(plan, plan.finish(parts), text_confounders=self.text_confounders_)
        self._keep_rows(log, backend, parts)
        return self

    def record_fit(self, plan: FitPlan, effects: pd.DataFrame, *,
                   text_confounders=None) -> "ItemEffectEstimator":
        """Record a fit run through the skeleton (e.g. on Spark, where the rows stay on the
        cluster): the ``plan``'s decisions and the finished ``effects`` table become the
        fitted attributes (``effects_``, ``converged_``, ``design_spec_``, ...); per-row
        outputs are the backend's. Returns self."""
        self.effects_, self.converged_ = effects, plan.all_converged(effects)
        self.text_confounders_ = text_confounders
        self.unit_ = plan.unit
        self.plan_ = plan
        self.segments_ = plan.facts.segments
        self.design_spec_ = spec = plan.spec
        self.design_columns_, self.dropped_columns_ = list(spec.columns), list(spec.dropped)
        tuned = effects.attrs.get("shrinkage") or {}
        self.shrinkage_ = {name: float(tuned.get(name, plan.shrinkage))
                           for name in ("propensity", "outcome")}
        self.n_repeats_ = effects.attrs.get("n_repeats", plan.n_repeats)
        self.outcome_family_ = plan.outcome_family
        self.outcome_scale_ = plan.outcome_scale

    def _keep_rows(self, log: InteractionLog, backend, parts) -> None:
        """The per-row outputs, fitted models and per-item extras of the one local part."""
        part = parts[0] if parts else None
        index, rows = log.data.index, backend.rows
        n_seg = len(self.segments_)
        if part is None:  # no item is estimable: statuses only, no fit
            empty = np.zeros(0)
            outputs = dict(psi=empty, e_clipped=empty, e=empty, mu0=empty, mu1=empty)
            self.nuisance_fits_, self.n_iter_ = [], 0
            plan = self.plan_
            chosen = {name: tuned_penalty(model) for name, model in
                      zip(("propensity", "outcome"), (plan.propensity, plan.outcome))
                      if model is not None}
            shift = np.zeros(n_seg)
        else:
            outputs, self.nuisance_fits_, self.n_iter_ = part.rows, part.nuisance_fits, part.n_iter
            chosen, shift = part.shared_penalty, part.balance_shift
        # flexible nuisances: per nuisance, the models' out-of-fold losses and weights; None
        # for the GLMs (a refit does not keep an earlier fit's)
        self.nuisance_models_ = None if part is None else part.nuisance_models
        self.shared_penalty_ = chosen
        self.propensity_ = _row_series(index, rows, outputs["e_clipped"], "propensity")
        self.mu0_ = _row_series(index, rows, outputs["mu0"], "mu0")
        self.mu1_ = _row_series(index, rows, outputs["mu1"], "mu1")
        self.psi_ = _row_series(index, rows, outputs["psi"], "psi")
        self.fold_ = pd.Series(backend.folds.astype(np.int64), index=index, name="fold")
        self.split_folds_ = backend.split_folds
        self.balance_shift_ = pd.Series(shift, index=self.effects_.set_index(self._keys()).index,
                                        name="balance_shift")
        from ..nuisance import calibration_table
        t = log.data[log.treatment].to_numpy()[rows]
        self.propensity_calibration_ = calibration_table(outputs["e"], t)
        self.log_ = log

    def _text_features(self, log: InteractionLog) -> pd.DataFrame | None:
        if not log.text:
            self.text_confounders_ = None
            return None
        from ..confounders import TextConfounders
        self.text_confounders_ = TextConfounders(encoder=self.text_encoder,
                                                 n_components=self.text_components)
        return self.text_confounders_.fit_transform(log.data, log.text)


def _row_series(index, rows, values, name):
    out = np.full(len(index), np.nan)
    out[rows] = values
    return pd.Series(out, index=index, name=name)
