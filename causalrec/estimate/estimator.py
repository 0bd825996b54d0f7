"""Per-item causal effects of a recommendation: AIPW / IPW / outcome regression for all items
in one batched, cross-fitted pass."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..schema import InteractionLog, SchemaError, _as_list
from . import _core
from .design import assign_folds, build_design, segment_ids
from .summary import EffectSummary

__all__ = ["ItemEffectEstimator", "estimate_item_effects", "resolve_device", "resolve_shrinkage"]

METHODS = ("aipw", "ipw", "or")
NUISANCE = ("pooled", "per_item")
# statuses for which no estimate is formed: numbers are NaN
NO_ESTIMATE = ("no_treated", "no_control", "too_few_rows")
AUTO_SHRINKAGE_PER_COLUMN = 1.0


def resolve_device(device="auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_shrinkage(shrinkage, n_columns: int) -> float:
    """The pooled models' penalty on item deviations; "auto" grows with the dimension."""
    return float(AUTO_SHRINKAGE_PER_COLUMN * max(1, n_columns) if shrinkage == "auto" else shrinkage)


def _resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "float64": torch.float64}
    if dtype not in table:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return table[dtype]


class ItemEffectEstimator:
    """Average effect of recommending each item, estimated for all items at once.

    Parameters
    ----------
    method : "aipw" (doubly robust, default), "ipw" (Hajek-normalised) or "or" (outcome
        regression). Every method reports influence-function standard errors.
    normalize : AIPW averages its residual correction with normalised weights,
        sum w (y - mu) / sum w per arm, instead of dividing by n (default True). Still doubly
        robust, but a few extreme weights can no longer swing an item's estimate; its standard
        error is the larger of the normalised and the plain AIPW influence-function SEs,
        because a dominant weight hides its own residual from the normalised one.
        False gives textbook AIPW.
    nuisance : "pooled" (default): one model over all rows with item intercepts and item
        slopes shrunk toward shared slopes; "per_item": independent ridge models per item;
        "boosted": gradient-boosted models on top of the pooled GLM (large items get their
        own, kept where they win out of fold); "auto": per nuisance, the out-of-fold-loss
        stack of the GLM and the boosted model; a scikit-learn estimator or a pair
        (propensity, outcome) of them; or a ``causalrec.nuisance.FlexibleNuisance`` with
        settings (see ``causalrec.nuisance``).
    n_folds : cross-fitting folds, stratified by item and arm (1 disables cross-fitting).
    n_repeats : independent cross-fitting splits whose out-of-fold predictions are averaged
        (costs ``n_repeats`` times the fits; reduces the split-to-split noise of small items).
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
    alpha : 1 - confidence level of the intervals. Intervals and p-values use Student t
        with ``dof = min(n_treated, n_control) - 1`` (normal for large items).
    text_encoder, text_components : how text columns become confounders.
    device : "auto" (CUDA when present), "cpu", "cuda", ... ; dtype : "float32" / "float64".
    seed : fixes the cross-fitting folds.
    max_iter : most Newton-type steps per nuisance fit (two Newton steps, then chord steps that
        reuse the last Hessian; a fit that stops here has ``converged_`` False).

    Attributes
    ----------
    effects_ : DataFrame, one row per item (see ``estimate_item_effects``).
    propensity_, mu0_, mu1_, psi_, fold_ : Series aligned with the log's rows (NaN / -1 for
        items that could not be estimated): fitted propensity (clipped), outcome predictions
        under control / treatment, influence values, cross-fitting fold.
    design_columns_ : names of the confounder columns the models used.
    nuisance_fits_ : per fold, the fitted ``GLMFit`` of each nuisance model (flexible
        nuisances: per repeat, a ``causalrec.nuisance.NuisanceResult``).
    nuisance_models_ : flexible nuisances only: per nuisance, out-of-fold losses of the GLM,
        pooled and flexible models, the stacking weight and the items with own models.
    propensity_calibration_ : binned calibration table of the fitted (unclipped) propensity.
    """

    def __init__(self, method="aipw", normalize=True, nuisance="pooled", n_folds=2, n_repeats=1,
                 penalty=1.0,
                 shrinkage="auto", intercept_penalty=1e-3, outcome_model="auto", clip=0.01,
                 trim=None, min_rows_per_arm=10, min_ess=5.0, alpha=0.05, text_encoder=None,
                 text_components=8, device="auto", dtype="float32", seed=0, max_iter=50):
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
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.max_iter = max_iter

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be True or False, got {self.normalize!r}")
        from ..nuisance import resolve_nuisance  # raises ValueError naming nuisance
        self._flexible = resolve_nuisance(self.nuisance)
        if self._flexible is not None:
            self._flexible.learners()
        if not (isinstance(self.n_repeats, (int, np.integer)) and self.n_repeats >= 1):
            raise ValueError(f"n_repeats must be a positive integer, got {self.n_repeats!r}")
        if not (isinstance(self.n_folds, (int, np.integer)) and self.n_folds >= 1):
            raise ValueError(f"n_folds must be a positive integer, got {self.n_folds!r}")
        if not 0 <= self.clip < 0.5:
            raise ValueError(f"clip must be in [0, 0.5), got {self.clip!r}")
        if self.trim is not None and not 0 < self.trim < 0.5:
            raise ValueError(f"trim must be in (0, 0.5), got {self.trim!r}")
        if not (self.shrinkage == "auto" or (np.isscalar(self.shrinkage) and self.shrinkage > 0)):
            raise ValueError(f"shrinkage must be 'auto' or a positive number, got {self.shrinkage!r}")
        if self.outcome_model not in ("auto", "logistic", "linear"):
            raise ValueError(f"outcome_model must be 'auto', 'logistic' or 'linear', "
                             f"got {self.outcome_model!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")

    # ------------------------------------------------------------------ fitting
    def fit(self, log: InteractionLog, folds=None) -> "ItemEffectEstimator":
        """Estimate every item's effect from a validated ``InteractionLog``.

        ``folds`` (optional, one integer in [0, n_folds) per row) fixes the cross-fitting
        folds, e.g. to re-use ``fold_`` of an earlier fit when refuting it; by default they
        are drawn from a seeded hash of each row's content (see ``assign_folds``).
        """
        self._check_params()
        if not isinstance(log, InteractionLog):
            raise TypeError("fit expects an InteractionLog; use estimate_item_effects for a DataFrame")
        device, dtype = resolve_device(self.device), _resolve_dtype(self.dtype)
        df = log.data
        keys = log.item_columns
        seg, self.segments_ = segment_ids(df, keys)
        n_seg = len(self.segments_)
        t = df[log.treatment].to_numpy(dtype=np.int64)
        y = df[log.outcome].to_numpy(dtype=np.float64)
        n_t = np.bincount(seg, weights=t, minlength=n_seg).astype(np.int64)
        n_all = np.bincount(seg, minlength=n_seg)
        status = _pre_status(n_t, n_all - n_t, self.min_rows_per_arm)
        use = (status == "ok")[seg]

        text_features = self._text_features(log)
        design = build_design(log, text_features, standardise=False,
                              contiguous=device.type == "cpu",
                              dtype=np.float64 if dtype == torch.float64 else np.float32)
        self.design_columns_, self.dropped_columns_ = design.columns, design.dropped
        self.shrinkage_ = resolve_shrinkage(self.shrinkage, len(design.columns))
        binary = log.outcome_is_binary  # one scan of the outcome column
        self.outcome_family_ = self._outcome_family(log, binary)
        content = keys + log.confounders + log.categorical + log.text
        if folds is None:
            folds = assign_folds(df, content, seg, t, y, self.n_folds, self.seed)
        else:
            folds = _check_folds(folds, len(df), self.n_folds)

        rows = np.flatnonzero(use)
        # X stays whole (a subset would copy it): the padding gathers only the rows in use
        X, standardise = design.X, (design.center, design.scale)
        del design
        logged_e = (None if log.propensity is None
                    else df[log.propensity].to_numpy(dtype=np.float64)[rows])
        # Each repeat's predictions are out-of-fold for every row, so their average is too;
        # averaging removes the noise of one particular split.
        self.nuisance_fits_ = []
        e, mu0, mu1 = 0.0, 0.0, 0.0
        for repeat in range(self.n_repeats):
            split = folds if repeat == 0 else assign_folds(df, content, seg, t, y, self.n_folds,
                                                           self.seed + repeat)
            fit_nuisances = self._fit_nuisances if self._flexible is None else self._fit_flexible
            preds = fit_nuisances(X, standardise, rows, seg[rows], t[rows], y[rows],
                                  split[rows], n_seg, logged_e, device, dtype)
            preds = [torch.as_tensor(p, device=device).to(torch.float64) for p in preds]
            e, mu0, mu1 = preds if self.n_repeats == 1 else (
                acc + p / self.n_repeats for acc, p in zip((e, mu0, mu1), preds))
        on_device = lambda a, kind: torch.as_tensor(a[rows], dtype=kind, device=device)
        table, psi, e_clipped = _effects_table(on_device(seg, torch.long),
                                               on_device(t, torch.float64),
                                               on_device(y, torch.float64), e, mu0, mu1, n_seg,
                                               self.method, self.clip, self.trim, self.alpha,
                                               binary=binary,
                                               normalize=self.normalize)
        mu0, mu1 = mu0.cpu().numpy(), mu1.cpu().numpy()
        table["status"] = _post_status(status, table, self.min_ess)
        table.loc[table["status"].isin(NO_ESTIMATE), ["ate", "se", "ci_low", "ci_high", "p_value"]] = np.nan
        table.loc[table["status"] == "constant_outcome", ["se", "ci_low", "ci_high", "p_value"]] = np.nan
        table["n"], table["n_treated"], table["n_control"] = n_all, n_t, n_all - n_t

        item_frame = self.segments_.rename(columns={keys[0]: "item"})
        self.effects_ = pd.concat([item_frame, table], axis=1)[_column_order(item_frame, table)]
        self.effects_.attrs.update(method=self.method, normalize=self.normalize,
                                   nuisance=self.nuisance,
                                   n_folds=self.n_folds, seed=self.seed, device=str(device),
                                   outcome_model=self.outcome_family_)
        index = df.index
        self.propensity_ = _row_series(index, rows, e_clipped, "propensity")
        self.mu0_ = _row_series(index, rows, mu0, "mu0")
        self.mu1_ = _row_series(index, rows, mu1, "mu1")
        self.psi_ = _row_series(index, rows, psi, "psi")
        self.fold_ = pd.Series(folds, index=index, name="fold")
        from ..nuisance import calibration_table
        self.propensity_calibration_ = calibration_table(e.cpu().numpy(), t[rows])
        self.log_ = log
        return self

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

    def _fit_nuisances(self, X, standardise, rows, seg, t, y, folds, n_seg, logged_e, device,
                       dtype):
        """Cross-fitted propensity and outcome predictions for the rows in use (``rows`` of X;
        seg, t, y, folds are already subset), all items at once; ``standardise`` = (center,
        scale) of X's columns."""
        F = self.n_folds
        n = len(seg)
        # cells ordered (fold, arm, item): every fit's blocks form a few contiguous runs
        cells = (folds * 2 + t) * n_seg + seg
        layout = _core.make_layout(cells, n_seg * F * 2, device=device)
        index = None if len(rows) == len(X) else torch.as_tensor(rows, device=device)
        X = _core.read_only_tensor(X, dtype, device).contiguous()  # GPUs reorder X themselves
        Xb = _core.pad_design(layout, X, *standardise, index=index)
        wb = layout.valid.to(dtype)
        tb = _core.pad(layout, torch.as_tensor(t, dtype=dtype, device=device))
        yb = _core.pad(layout, torch.as_tensor(y, dtype=dtype, device=device))
        block_seg = layout.block_cell % n_seg
        block_fold = layout.block_cell // (2 * n_seg)
        block_arm = (layout.block_cell // n_seg) % 2
        local_pen, shared_pen = _core.penalties(
            Xb.shape[-1], self.nuisance == "pooled", self.penalty, self.shrinkage_,
            self.intercept_penalty, dtype, device)
        fit = dict(pooled=self.nuisance == "pooled", local_penalty=local_pen,
                   shared_penalty=shared_pen, max_iter=self.max_iter)
        out = {name: torch.full((n,), float("nan"), dtype=dtype, device=device)
               for name in ("e", "mu0", "mu1")}
        if logged_e is not None:
            out["e"] = torch.as_tensor(logged_e, dtype=dtype, device=device)
        for f in range(F):
            train = block_fold != f if F > 1 else torch.ones_like(block_fold, dtype=torch.bool)
            test = torch.nonzero(block_fold == f if F > 1 else train).squeeze(1)
            # later folds start Newton from the first fold's fits: same model, half the data
            # shared, so they begin close to their optimum and need fewer Gram passes
            start = self.nuisance_fits_[0] if self.nuisance_fits_ else {}
            fits = {}
            if logged_e is None:
                blocks = torch.nonzero(train).squeeze(1)
                fits["e"] = _core.fit_glm(Xb, tb, wb, blocks, block_seg, n_seg,
                                          family="logistic", init=start.get("e"), **fit)
            for arm in (0, 1):
                blocks = torch.nonzero(train & (block_arm == arm)).squeeze(1)
                fits[f"mu{arm}"] = _core.fit_glm(Xb, yb, wb, blocks, block_seg, n_seg,
                                                 family=self.outcome_family_,
                                                 init=start.get(f"mu{arm}"), **fit)
            for name, model in fits.items():
                pred = _core.predict_glm(model, Xb, test, block_seg)
                _core.unpad(layout, pred, test, out=out[name])
            self.nuisance_fits_.append(fits)
        self.n_iter_ = max((m.n_iter for fits in self.nuisance_fits_ for m in fits.values()), default=0)
        self.converged_ = all(m.converged for fits in self.nuisance_fits_ for m in fits.values())
        return out["e"], out["mu0"], out["mu1"]

    def _fit_flexible(self, X, standardise, rows, seg, t, y, folds, n_seg, logged_e, device,
                      dtype):
        """Cross-fitted predictions of flexible learners (see ``causalrec.nuisance``)."""
        from ..nuisance import cross_fit_nuisances
        glm = dict(shrinkage=self.shrinkage_, intercept_penalty=self.intercept_penalty,
                   max_iter=self.max_iter)
        fit = cross_fit_nuisances(X[rows], seg, t, y, folds, n_items=n_seg,
                                  family=self.outcome_family_, spec=self._flexible,
                                  glm=glm, logged_e=logged_e, device=device,
                                  seed=self.seed + len(self.nuisance_fits_))
        self.nuisance_fits_.append(fit)
        self.nuisance_models_ = fit.models  # last repeat's choice per nuisance
        self.n_iter_ = max(r.glm_n_iter for r in self.nuisance_fits_)  # the offset GLMs'
        self.converged_ = all(r.glm_converged for r in self.nuisance_fits_)
        return fit.e, fit.mu0, fit.mu1

    # ------------------------------------------------------------------ results
    def _check_fitted(self):
        if not hasattr(self, "effects_"):
            raise RuntimeError("this estimator is not fitted yet; call fit(log) first")

    def effect(self) -> pd.Series:
        """Estimated ATE per item."""
        self._check_fitted()
        return self.effects_.set_index(self._keys())["ate"]

    def effect_interval(self, alpha: float | None = None) -> pd.DataFrame:
        """Normal confidence interval per item at level 1 - alpha."""
        self._check_fitted()
        eff = self.effects_.set_index(self._keys())
        z = stats.t.ppf(1 - (self.alpha if alpha is None else alpha) / 2, eff["dof"])
        return pd.DataFrame({"ci_low": eff["ate"] - z * eff["se"],
                             "ci_high": eff["ate"] + z * eff["se"]})

    def summary_frame(self, alpha: float | None = None) -> pd.DataFrame:
        """The effects table with intervals at level 1 - alpha."""
        self._check_fitted()
        frame = self.effects_.copy()
        interval = self.effect_interval(alpha)
        frame["ci_low"], frame["ci_high"] = interval["ci_low"].to_numpy(), interval["ci_high"].to_numpy()
        return frame

    def summary(self, top: int = 10) -> EffectSummary:
        self._check_fitted()
        return EffectSummary(self, top=top)

    def _keys(self):
        return ["item"] + list(self.effects_.columns[1:len(self.segments_.columns)])


def _check_folds(folds, n_rows, n_folds) -> np.ndarray:
    folds = np.asarray(folds)
    if folds.shape != (n_rows,) or not np.issubdtype(folds.dtype, np.integer):
        raise ValueError(f"folds must be {n_rows} integers (one per row), got shape "
                         f"{folds.shape} and dtype {folds.dtype}")
    if len(folds) and (folds.min() < 0 or folds.max() >= n_folds):
        raise ValueError(f"folds must lie in [0, {n_folds}), found {folds.min()}..{folds.max()}")
    return folds.astype(np.int64)


def _pre_status(n_t, n_c, min_rows):
    status = np.full(len(n_t), "ok", dtype=object)
    status[(n_t < min_rows) | (n_c < min_rows)] = "too_few_rows"
    status[n_c == 0] = "no_control"
    status[n_t == 0] = "no_treated"
    return status


def _post_status(status, table, min_ess):
    status = status.copy()
    ok = status == "ok"
    poor = ok & ~(np.minimum(table["ess_treated"], table["ess_control"]) >= min_ess)
    status[poor] = "poor_overlap"
    constant = ok & (table["outcome_sd"].to_numpy() == 0)
    status[constant] = "constant_outcome"
    status[(status == "ok") & ~np.isfinite(table["ate"].to_numpy())] = "fit_failed"
    return status


def _seg_sum(values, seg, n_seg):
    return torch.zeros(n_seg, dtype=values.dtype, device=values.device).index_add_(0, seg, values)


def _effects_table(seg, t, y, e, mu0, mu1, n_seg, method, clip, trim, alpha, binary,
                   normalize=True):
    """Per-row influence values and per-item estimates, in float64 on the tensors' device
    (row arrays stay where the fits ran; only per-item numbers and two row arrays come back).
    Returns the per-item table and, as numpy, psi and the clipped propensities."""
    S = lambda values: _seg_sum(values, seg, n_seg)
    e_clip = e.clamp(clip, 1 - clip)
    keep = torch.ones_like(e, dtype=torch.bool) if trim is None else (e >= trim) & (e <= 1 - trim)
    k = keep.to(e.dtype)
    wt, wc = k * t / e_clip, k * (1 - t) / (1 - e_clip)
    n_keep = S(k)
    correction = wt * (y - mu1) - wc * (y - mu0)
    psi_plain = None  # textbook AIPW influence values, for the normalised AIPW's variance
    if method == "aipw" and normalize:
        # residuals averaged with normalised weights (Robins et al. 2007)
        psi, *_ = _normalised_scores(seg, wt, wc, y, mu0, mu1, n_keep, n_seg)
        psi_plain = torch.where(keep, mu1 - mu0 + correction, 0.0)
    elif method == "aipw":
        psi = mu1 - mu0 + correction
    elif method == "ipw":  # Hajek: weighted arm means, i.e. normalised AIPW without outcome model
        psi, m1, m0, s1, s0 = _normalised_scores(seg, wt, wc, y, 0.0, 0.0, n_keep, n_seg)
    else:  # outcome regression; spread by the AIPW influence function, centred on OR
        psi = mu1 - mu0 + correction - (S(k * correction) / n_keep)[seg]
    psi = torch.where(keep, psi, 0.0)
    ate = S(psi) / n_keep
    var_of_mean = _variance_of_mean(psi, seg, n_seg, n_keep)
    if psi_plain is not None:
        var_of_mean = torch.fmax(var_of_mean, _variance_of_mean(psi_plain, seg, n_seg, n_keep))
    n_t, n_c = S(t), S(1 - t)
    if binary:
        # An arm with no (or only) clicks shows no residual spread, so the empirical
        # variance collapses; the variance implied by the fitted click probabilities
        # does not. Those items take the larger of the two.
        events_t, events_c = S(t * y), S((1 - t) * y)
        degenerate = ((events_t == 0) | (events_t == n_t) | (events_c == 0) | (events_c == n_c))
        if method == "ipw":
            r1, r0 = mu1 * (1 - mu1) + (mu1 - m1[seg]) ** 2, mu0 * (1 - mu0) + (mu0 - m0[seg]) ** 2
            model = S(wt ** 2 * r1) / s1 ** 2 + S(wc ** 2 * r0) / s0 ** 2
        else:
            spread = k * (mu1 - mu0 - ate[seg]) ** 2 + wt ** 2 * mu1 * (1 - mu1) + wc ** 2 * mu0 * (1 - mu0)
            model = S(spread) / n_keep ** 2
        var_of_mean = torch.where(degenerate, torch.fmax(var_of_mean, model), var_of_mean)
    n_all = n_t + n_c
    y_mean = S(y) / n_all
    per_item = {  # float64 numpy from here on
        "ate": ate, "se": var_of_mean.sqrt(), "n_t": n_t, "n_c": n_c,
        "treated_mean": S(t * y) / n_t, "control_mean": S((1 - t) * y) / n_c,
        "y_mean": y_mean, "y_sq": S(y ** 2) / n_all,
        "ess_treated": S(wt) ** 2 / S(wt ** 2), "ess_control": S(wc) ** 2 / S(wc ** 2),
        "mu0_mean": S(mu0) / n_all,
        "e_min": e.new_full((n_seg,), float("inf")).scatter_reduce_(0, seg, e, "amin"),
        "e_max": e.new_full((n_seg,), float("-inf")).scatter_reduce_(0, seg, e, "amax"),
        "n_clipped": S((e != e_clip).to(e.dtype)), "n_trimmed": S(1 - k),
    }
    v = {name: values.cpu().numpy() for name, values in per_item.items()}
    ate, se, empty = v["ate"], v["se"], v["n_t"] + v["n_c"] == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        # Student t with the smaller arm's degrees of freedom: IPW-weighted influence values
        # are heavy-tailed, and with a few dozen rows in an arm a normal interval is too short.
        dof = np.maximum(np.minimum(v["n_t"], v["n_c"]) - 1, 1)
        z = stats.t.ppf(1 - alpha / 2, dof)
        p_value = 2 * stats.t.sf(np.abs(ate / se), dof)
        outcome_sd = np.sqrt(np.maximum(v["y_sq"] - v["y_mean"] ** 2, 0))
    outcome_sd[np.abs(outcome_sd) < 1e-12 * np.maximum(1, np.abs(v["y_mean"]))] = 0.0
    table = pd.DataFrame({
        "ate": ate, "se": se, "ci_low": ate - z * se, "ci_high": ate + z * se,
        "p_value": p_value, "dof": dof, "naive_ate": v["treated_mean"] - v["control_mean"],
        "treated_mean": v["treated_mean"], "control_mean": v["control_mean"],
        "mu0_mean": v["mu0_mean"], "outcome_sd": outcome_sd,
        "e_min": np.where(empty, np.nan, v["e_min"]), "e_max": np.where(empty, np.nan, v["e_max"]),
        "ess_treated": v["ess_treated"], "ess_control": v["ess_control"],
        "n_clipped": v["n_clipped"].astype(np.int64), "n_trimmed": v["n_trimmed"].astype(np.int64),
    })
    return table, psi.cpu().numpy(), e_clip.cpu().numpy()


def _normalised_scores(seg, wt, wc, y, mu0, mu1, n, n_seg):
    """Influence values of mean(mu1 - mu0) + the per-arm weighted means of the residuals with
    normalised weights, linearised; also those means and the weight sums (s1, s0)."""
    s1, s0 = _seg_sum(wt, seg, n_seg), _seg_sum(wc, seg, n_seg)
    r1 = _seg_sum(wt * (y - mu1), seg, n_seg) / s1
    r0 = _seg_sum(wc * (y - mu0), seg, n_seg) / s0
    psi = mu1 - mu0 + (r1 - r0)[seg] + n[seg] * (
        wt * (y - mu1 - r1[seg]) / s1[seg] - wc * (y - mu0 - r0[seg]) / s0[seg])
    return psi, r1, r0, s1, s0


def _variance_of_mean(psi, seg, n_seg, n):
    mean = _seg_sum(psi, seg, n_seg) / n
    var = (_seg_sum(psi ** 2, seg, n_seg) - n * mean ** 2) / (n - 1)
    return var.clamp(min=0) / n


def _column_order(item_frame, table):
    head = ["ate", "se", "ci_low", "ci_high", "p_value", "n", "n_treated", "n_control", "status"]
    rest = [c for c in table.columns if c not in head]
    return list(item_frame.columns) + head + rest


def _row_series(index, rows, values, name):
    out = np.full(len(index), np.nan)
    out[rows] = values
    return pd.Series(out, index=index, name=name)


def estimate_item_effects(df: pd.DataFrame, item: str, treatment: str, outcome: str,
                          confounders=None, categorical=None, text=None, propensity=None,
                          by=None, graph=None, folds=None, **options) -> pd.DataFrame:
    """Average causal effect of recommending each item, with honest intervals.

    Parameters
    ----------
    df : the log, one row per (user, item, context) opportunity.
    item, treatment, outcome : column names (treatment is 0/1).
    confounders, categorical, text : numeric, categorical and free-text confounders.
    propensity : logged probability of treatment; when given, IPW/AIPW use it.
    by : extra segment columns (e.g. a user group): effects per item x group.
    graph : a ``CausalGraph``; its backdoor adjustment set supplies the confounders.
    folds : optional cross-fitting fold per row (see ``ItemEffectEstimator.fit``).
    **options : parameters of ``ItemEffectEstimator`` (method, nuisance, n_folds, seed, ...).

    Returns
    -------
    DataFrame, one row per item: ``item, ate, se, ci_low, ci_high, p_value, n, n_treated,
    n_control, status`` then diagnostics (``naive_ate``, arm means, propensity range,
    effective sample sizes per arm, clipped / trimmed row counts). ``status`` is "ok" or the
    reason the item could not be (reliably) estimated; items without an estimate get NaN.
    """
    if graph is not None:
        roles = graph.merge_adjustment(df, confounders, categorical, text)
        confounders, categorical, text = roles["confounders"], roles["categorical"], roles["text"]
    by = _as_list(by)
    # a segment column is constant within each segment, so it cannot confound there
    confounders, categorical, text = ([c for c in _as_list(cols) if c not in by]
                                      for cols in (confounders, categorical, text))
    log = InteractionLog(df, item=[item] + by, treatment=treatment, outcome=outcome,
                         confounders=confounders, categorical=categorical, text=text,
                         propensity=propensity)
    return ItemEffectEstimator(**options).fit(log, folds=folds).effects_

