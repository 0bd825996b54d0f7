"""Per-user effects of recommending each item: a DR-learner over all items at once."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..base import BaseEstimator
from ..estimate.estimator import ItemEffectEstimator, resolve_device
from ..inference import benjamini_hochberg, critical_value, p_value
from ..summary import Summary
from ..backend import backend_for
from ..schema import InteractionLog, _as_list, check_key_values
from ..utils.frames import check_frame
from ..utils.validation import Callable, InstanceOf, Integer, Interval, Options
from . import ridge
from .bootstrap import wald_bootstrap
from .features import UserFeatures
from .rows import LocalUpliftRows
from .score import chunked_top_k, quadratic_forms

__all__ = ["UpliftModel"]


class UpliftModel(BaseEstimator):
    """Conditional effect tau_k(x) of recommending item k to a user with features x.

    Stage 1 is ``ItemEffectEstimator`` (cross-fitted propensity and outcome models); each
    row's doubly robust pseudo-outcome ``mu1 - mu0 + t (y - mu1) / e - (1 - t)(y - mu0) / (1 - e)``
    uses nuisance models that never saw the row. Stage 2 regresses the pseudo-outcomes on the
    user features, all items at once, with item slopes shrunk toward shared slopes and the
    shared slopes toward zero (``causalrec.uplift.ridge``). Pseudo-outcomes are very noisy,
    so both penalties are chosen by the held-out DR loss over the estimator's folds (fits on
    the other folds), and so is a third one that shrinks each item's mean effect toward the
    mean over items (small items' means are noisy); the grid includes the per-item ATE (no
    mean shrinkage, infinite slope penalties), so the model is never worse than the ATE on
    that loss.

    Parameters
    ----------
    features, categorical, text : user columns the effect may vary with (numeric, one-hot
        encoded, embedded text); they need not be the log's confounders.
    shrinkage : "cv" (default) or a triple ``(mean, local, shared)`` of non-negative
        penalties in units of the pseudo-outcomes' variance: on item means (toward the mean
        over items), item slope deviations and shared slopes (``inf`` fixes those slopes at
        zero; ``(0, 0, inf)`` is an unpenalised regression per item).
    alpha : 1 - level of the intervals. fdr : Benjamini-Hochberg level of the
        heterogeneity calls. n_bootstrap : bootstrap draws of the heterogeneity test (49 by
        default: null rejection 0.040 at 5% over 1062 simulated items, 0.034 with 199 draws;
        its cost grows with rows x draws x features^2: at 200k rows x 1,000 items x 32
        features it is most of the fit's 28 s); 0 skips the test (p-values NaN).
    unknown_levels : "error" (default) or "reference": what ``effect``, ``effect_interval``,
        ``effect_matrix`` and ``recommend`` do with a categorical level (or a missing value)
        not seen at fit: raise a ``SchemaError`` naming the column and levels, or score the
        rows as the reference level with a ``DataWarning`` giving their count.
        Missing values in numeric features follow the log's ``missing``: an error, or
        (``InteractionLog(..., missing="indicator")``) the design's fill and 0/1 indicator,
        fixed at fit and reused by every prediction (``UserFeatures``).
    **estimator_options : options of ``ItemEffectEstimator`` (nuisance, n_folds, seed,
        device, ...).

    Attributes
    ----------
    estimator_ : the fitted stage-1 ``ItemEffectEstimator``.
    items_ : item labels (the columns of ``effect_matrix``).
    heterogeneity_ : per item: n, ate (mean pseudo-outcome), effect_sd (spread of the
        fitted effect over the item's rows), wald, df, p_value (per-item test that the effect
        does not vary with the features: HC0 Wald statistic of an unpenalised per-item fit,
        rescaled so that its mean over ``n_bootstrap`` studentised pairs-bootstrap draws
        equals df, chi-square reference; see ``causalrec.uplift.bootstrap``), q_value (BH
        across items), heterogeneous. On simulated null logs it rejected 0.034-0.040 at the
        5% level (1062 items; the F-referenced HC3 test it replaces: 0.109); power is
        modest for items with few treated rows (0.69 with 50+ rows per arm, 0.97 with 200+).
    coef_ : per item and term ("mean", then each feature per standard deviation): coef,
        se, ci_low, ci_high, p_value of the fitted (shrunk) model.
    shrinkage_ : chosen (mean, local, shared) penalties; cv_results_ : held-out DR loss per
        row for every triple of the grid (``chosen`` marks the minimum).
    response_coef_matrix_, response_shrinkage_, response_cv_results_ : the same for the
        model of the outcome under recommendation (``response``), always chosen by held-out
        loss.
    pseudo_outcome_ : per-row pseudo-outcomes (NaN on rows not used); after a Spark fit a
        Spark DataFrame ``row_id, pseudo_outcome`` of the stage-1 fitted rows.
    estimator_effects_ : the stage-1 per-item table.

    On a Spark DataFrame (``fit(sdf, item=..., treatment=..., outcome=..., ...)``) the same
    steps run with every row sum aggregated on Spark (``causalrec.spark.uplift``); the row
    keys that draw the bootstrap weights are the pandas rows' positions, the ``row_id``
    column on Spark.
    """

    _parameter_constraints = {
        "features": [InstanceOf((str, list, tuple), "a column name or a list of them")],
        "categorical": [InstanceOf((str, list, tuple), "a column name or a list of them")],
        "text": [InstanceOf((str, list, tuple), "a column name or a list of them")],
        "shrinkage": [Options("cv"), Callable(
            lambda v: isinstance(v, (tuple, list)) and len(v) == 3
            and all(np.isscalar(x) and x >= 0 for x in v),
            "a triple (mean, local, shared) of non-negative numbers")],
        "alpha": [Interval(0, 1, "neither")],
        "fdr": [Interval(0, 1, "neither")],
        "n_bootstrap": [Options(0), Integer(19, None)],
        "unknown_levels": [Options("error", "reference")],
    }

    def __init__(self, *, features=(), categorical=(), text=(), shrinkage="cv", alpha=0.05,
                 fdr=0.05, n_bootstrap=49, unknown_levels="error", **estimator_options):
        self.features = features
        self.categorical = categorical
        self.text = text
        self.shrinkage = shrinkage
        self.alpha = alpha
        self.fdr = fdr
        self.n_bootstrap = n_bootstrap
        self.unknown_levels = unknown_levels
        self.estimator_options = estimator_options

    # the stage-1 ItemEffectEstimator options ride along as parameters of their own
    def _shallow_params(self) -> dict:
        return {**super()._shallow_params(), **self.estimator_options}

    def _settable_names(self) -> set[str]:
        return super()._settable_names() | set(ItemEffectEstimator._param_names())

    def _set_param(self, name: str, value) -> None:
        if name in self._param_names():
            setattr(self, name, value)
        else:
            self.estimator_options = {**self.estimator_options, name: value}

    # ------------------------------------------------------------------ fitting
    def _check_params(self):
        self._validate_params()
        if not (_as_list(self.features) or _as_list(self.categorical) or _as_list(self.text)):
            raise ValueError("features, categorical or text must name at least one user column")

    def fit(self, log, **roles) -> "UpliftModel":
        """Fit on an ``InteractionLog``, or on a Spark DataFrame with its roles as keywords
        (``item, treatment, outcome, confounders, categorical, propensity, unit, row_id``;
        see ``causalrec.spark.uplift``): the same steps, the rows' sums aggregated on Spark."""
        self._check_params()
        rows = self._rows_for(log, roles)
        self.encoder_ = UserFeatures(self.features, self.categorical, self.text,
                                     text_encoder=self.estimator_options.get("text_encoder"),
                                     text_components=self.estimator_options.get("text_components", 8),
                                     unknown_levels=self.unknown_levels, missing=rows.missing)
        rows.check(self)  # the roles and feature columns, before the costly stage 1
        est, effects, items = rows.stage1(self)
        self.estimator_, self.estimator_effects_ = est, effects
        self.device_ = resolve_device(est.device)
        self.items_ = pd.Index(items, name="item")
        K, n_folds, device = len(self.items_), est.n_folds, rows.device  # no backend in closures
        rows.fit_encoder(self.encoder_)
        self.pseudo_outcome_ = rows.pseudo_outcomes()
        moments = _to_device(rows.reduce(lambda blk: _cells(blk, K, n_folds, device)),
                             self.device_)
        H = moments[0]
        cells, response_cells = ridge.Moments(H, *moments[1:3]), ridge.Moments(H, *moments[3:])
        n_used = float(H[..., 0, 0].sum())
        scale, response_scale = 1.0, 1.0
        if n_used > 1:  # the variances of g and g1 about their means (a second pass)
            centre, response_centre = (float(c.b[..., 0].sum()) / n_used
                                       for c in (cells, response_cells))
            squares = rows.reduce(lambda blk: (np.sum((blk.g - centre) ** 2),
                                               np.sum((blk.g1 - response_centre) ** 2)))
            scale, response_scale = (float(v) / n_used for v in squares)
        self.shrinkage_, self.cv_results_, fit = self._ridge(cells, scale, self.shrinkage)
        self.coef_matrix_ = fit.coef
        coef = fit.coef.cpu()
        B = _to_device(rows.reduce(lambda blk: (ridge.meat(
            blk.Z, _residual(blk, coef), blk.item, K, device),)), self.device_)[0]
        self.cov_ = ridge.covariance(fit, B)
        empty = fit.n == 0  # items without usable rows: no effect
        self.coef_matrix_[empty] = float("nan")
        self.cov_[empty] = float("nan")
        # the outcome under recommendation, learned from the training rows alone (a policy
        # that ranks by it could have been run): a DR-learner of mu1 on the same features
        self.response_shrinkage_, self.response_cv_results_, response = self._ridge(
            response_cells, response_scale, "cv")
        self.response_coef_matrix_ = response.coef
        self.response_coef_matrix_[empty] = float("nan")
        self.heterogeneity_ = self._heterogeneity(rows, fit, coef)
        self.coef_ = self._coef_table(fit)
        return self

    def _rows_for(self, log, roles):
        """The backend for ``log``'s type: Spark (imported only then) or an InteractionLog."""
        spark_rows = backend_for(log, None, spark="uplift_rows")
        if spark_rows is not None:
            return spark_rows(log, **roles)
        if not isinstance(log, InteractionLog):
            raise TypeError("fit expects an InteractionLog or a Spark DataFrame")
        if roles:
            raise TypeError(f"fit takes roles as keywords only with a Spark DataFrame (got "
                            f"{sorted(roles)}); an InteractionLog carries its own")
        return LocalUpliftRows(log)

    @staticmethod
    def _ridge(cells, scale, shrinkage):
        """The ridge fit of all items at the penalties ``shrinkage`` (a triple, in units of
        ``scale``, the pseudo-outcomes' variance) or, for "cv", at the triple with the least
        held-out loss; returns (penalties, the grid's losses or None, fit)."""
        table = None
        if shrinkage == "cv":
            grid = ridge.select_penalties(cells, scale)
            table = pd.DataFrame(grid, columns=["mean", "local", "shared", "heldout_loss"])
            table["heldout_loss"] /= float(cells.H[..., 0, 0].sum())  # per row
            best = table["heldout_loss"].idxmin()
            table["chosen"] = table.index == best
            shrinkage = tuple(table.loc[best, ["mean", "local", "shared"]])
        shrinkage = tuple(float(v) for v in shrinkage)
        total = ridge.Moments(cells.H.sum(0), cells.b.sum(0), cells.q.sum(0))
        mean, local, shared = (v * scale for v in shrinkage)
        return shrinkage, table, ridge.fit_ridge(total, local, shared, mean)

    def _heterogeneity(self, rows, fit, coef) -> pd.DataFrame:
        """Per-item test that the effect does not vary with the features: studentised pairs
        bootstrap of the Wald statistic of an unpenalised per-item fit (``bootstrap``)."""
        n, p, K = fit.n.cpu().numpy(), fit.coef.shape[1], len(self.items_)
        wald, df1, p_value = wald_bootstrap(rows, K, self.n_bootstrap, self.estimator_.seed,
                                            self.device_)
        ok = (df1 > 0) & (n - p > 0)
        p_value = np.where(ok, p_value, np.nan)
        q = np.full(len(p_value), np.nan)
        finite = np.isfinite(p_value)
        if finite.any():
            q[finite] = benjamini_hochberg(p_value[finite])
        spread = _fitted_spread(rows, coef, K)
        ate = self.estimator_effects_
        return pd.DataFrame({
            "item": self.items_, "n": n.astype(np.int64),
            "ate": np.where(n > 0, fit.coef[:, 0].cpu().numpy()
                            + (fit.m * fit.coef[:, 1:]).sum(1).cpu().numpy(), np.nan),
            "estimator_ate": ate["ate"].to_numpy(), "effect_sd": spread,
            "wald": np.where(ok, wald, np.nan), "df": df1, "p_value": p_value, "q_value": q,
            "heterogeneous": q <= self.fdr})

    def _coef_table(self, fit) -> pd.DataFrame:
        K, p = fit.coef.shape
        # centred coordinates: the mean effect, then slopes per standard deviation
        T = torch.eye(p, dtype=fit.coef.dtype, device=fit.coef.device).repeat(K, 1, 1)
        T[:, 0, 1:] = fit.m
        centred = (T @ self.coef_matrix_.unsqueeze(-1)).squeeze(-1).cpu().numpy()
        var = (T @ self.cov_ @ T.mT).diagonal(dim1=-2, dim2=-1)
        # a variance within rounding of the item's largest one is zero (a slope fixed at 0):
        # its square root would turn the rounding (of any summation order) into a visible se
        noise = 64 * torch.finfo(var.dtype).eps * var.abs().amax(1, keepdim=True)
        se = torch.sqrt(torch.where(var <= noise, 0.0, var)).cpu().numpy()  # NaN stays NaN
        z = critical_value(self.alpha)
        terms = ["mean"] + list(self.encoder_.columns_)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_values = p_value(centred, se)
        return pd.DataFrame({
            "item": np.repeat(self.items_.to_numpy(), p), "term": np.tile(terms, K),
            "coef": centred.ravel(), "se": se.ravel(), "ci_low": (centred - z * se).ravel(),
            "ci_high": (centred + z * se).ravel(), "p_value": p_values.ravel()})

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self):
        self._check_is_fitted("coef_")

    def item_codes(self, items) -> np.ndarray:
        """Positions of item labels in ``items_``; unknown items raise ValueError."""
        self._check_fitted()
        codes = self.items_.get_indexer(pd.Index(items))
        if (codes < 0).any():
            unknown = pd.unique(np.asarray(items, dtype=object)[codes < 0])
            raise ValueError(f"{len(unknown)} unknown item(s), e.g. {list(unknown[:5])}: the model "
                             f"was fitted on {len(self.items_)} items")
        return codes

    def _design(self, frame) -> torch.Tensor:
        Z = torch.as_tensor(self.encoder_.transform(frame), dtype=torch.float64, device=self.device_)
        return torch.cat([torch.ones(len(Z), 1, dtype=Z.dtype, device=Z.device), Z], dim=1)

    def _rows(self, df):
        self._check_fitted()
        check_frame(df, "the frame", [self.item_column_])
        check_key_values(df[self.item_column_], self.item_column_)
        codes = torch.as_tensor(self.item_codes(df[self.item_column_]), device=self.device_)
        return self._design(df), codes

    def effect(self, df: pd.DataFrame) -> pd.Series:
        """tau for each row of ``df``, for the item in its item column (Series on df.index)."""
        X, codes = self._rows(df)
        tau = (X * self.coef_matrix_[codes]).sum(1)
        return pd.Series(tau.cpu().numpy(), index=df.index, name="uplift")

    def response(self, df: pd.DataFrame) -> pd.Series:
        """Expected outcome if the item in ``df``'s item column is recommended (a click
        model), per row: the same second stage fitted to the training rows' doubly robust
        outcomes under recommendation ``mu1 + t (y - mu1) / e`` instead of the pseudo-outcomes,
        penalties chosen by held-out loss. ``evaluate_policy``'s "click" baseline ranks by it."""
        X, codes = self._rows(df)
        mu1 = (X * self.response_coef_matrix_[codes]).sum(1)
        return pd.Series(mu1.cpu().numpy(), index=df.index, name="response")

    def effect_interval(self, df: pd.DataFrame, alpha: float | None = None) -> pd.DataFrame:
        """Normal interval per row (ci_low, ci_high) from the second stage's covariance."""
        X, codes = self._rows(df)
        tau = (X * self.coef_matrix_[codes]).sum(1)
        se = quadratic_forms(X, self.cov_, codes).sqrt()
        z = critical_value(self.alpha if alpha is None else alpha)
        return pd.DataFrame({"ci_low": (tau - z * se).cpu().numpy(),
                             "ci_high": (tau + z * se).cpu().numpy()}, index=df.index)

    def effect_matrix(self, users: pd.DataFrame, items=None) -> pd.DataFrame:
        """users x items frame of tau_k(x) (index: users.index, columns: item labels)."""
        self._check_fitted()
        codes = np.arange(len(self.items_)) if items is None else self.item_codes(items)
        tau = self._design(users) @ self.coef_matrix_[torch.as_tensor(codes, device=self.device_)].T
        return pd.DataFrame(tau.cpu().numpy(), index=users.index,
                            columns=pd.Index(self.items_[codes], name="item"))

    def recommend(self, users: pd.DataFrame, k: int = 10, items=None,
                  alpha: float | None = None) -> pd.DataFrame:
        """Top-k items per user by uplift: long table ``user, rank, item, uplift, ci_low,
        ci_high``; scored in chunks of users (and items), never users x items at once."""
        self._check_fitted()
        if not Integer(1, None).is_satisfied_by(k):  # True is not a k
            raise ValueError(f"k must be a positive integer, got {k!r}")
        check_frame(users, "users", unique_index=True)
        codes = np.arange(len(self.items_)) if items is None else self.item_codes(items)
        codes = codes[np.isfinite(self.coef_matrix_[:, 0].cpu().numpy()[codes])]
        k = min(k, len(codes))
        X = self._design(users)
        idx = torch.as_tensor(codes, device=self.device_)
        score, pick = chunked_top_k(X, self.coef_matrix_[idx], k)
        picked = idx[pick]  # (n_users, k) positions in items_
        rows = torch.arange(len(X), device=X.device).repeat_interleave(k)
        se = quadratic_forms(X[rows], self.cov_, picked.reshape(-1)).sqrt()
        z = critical_value(self.alpha if alpha is None else alpha)
        tau = score.reshape(-1)
        return pd.DataFrame({
            "user": np.repeat(users.index.to_numpy(), k), "rank": np.tile(np.arange(1, k + 1), len(X)),
            "item": self.items_.to_numpy()[picked.reshape(-1).cpu().numpy()],
            "uplift": tau.cpu().numpy(), "ci_low": (tau - z * se).cpu().numpy(),
            "ci_high": (tau + z * se).cpu().numpy()})

    def summary(self, top: int = 10) -> Summary:
        """Header facts and, as its ``table``, the items with the strongest evidence of
        heterogeneity and their main driver."""
        self._check_fitted()
        het = self.heterogeneity_.dropna(subset=["p_value"]).sort_values("p_value").head(top)
        slopes = self.coef_[self.coef_["term"] != "mean"].assign(size=lambda f: f["coef"].abs())
        driver = slopes.sort_values("size").groupby("item").tail(1).set_index("item")
        table = het.assign(driver=driver["term"].reindex(het["item"]).to_numpy(),
                           driver_coef=driver["coef"].reindex(het["item"]).to_numpy())
        tested = self.heterogeneity_["p_value"].notna()
        info = {"Items": len(self.items_), "Items tested for heterogeneity": int(tested.sum()),
                f"Heterogeneous items (BH, FDR {self.fdr:g})":
                    int(self.heterogeneity_["heterogeneous"].sum()),
                "Shrinkage (mean, local, shared)": self.shrinkage_,
                "Confidence level": f"{1 - self.alpha:.0%}"}
        return Summary(info, None, table.reset_index(drop=True), "Strongest heterogeneity",
                       title="Per-user effects of recommendation (uplift)")


def _to_device(parts, device):
    return tuple(torch.as_tensor(v).to(device) for v in parts)


def _cells(blk, n_items, n_folds, device):
    """Per (fold, item) moments of the pseudo-outcomes (H, b, q), then b, q of the DR
    outcomes under recommendation (same rows, same H)."""
    cells = ridge.cell_moments(blk.Z, blk.g, blk.item, blk.fold, n_items, n_folds, device)
    response = ridge.cell_moments(blk.Z, blk.g1, blk.item, blk.fold, n_items, n_folds, device)
    return cells.H, cells.b, cells.q, response.b, response.q


def _fitted(blk, coef) -> np.ndarray:
    rows = coef[torch.as_tensor(blk.item)].numpy()
    return rows[:, 0] + (rows[:, 1:] * blk.Z).sum(1)


def _residual(blk, coef) -> np.ndarray:
    return blk.g - _fitted(blk, coef)


def _fitted_spread(rows, coef, n_items) -> np.ndarray:
    """Per item population standard deviation of the fitted effects (two passes: mean, then
    squared deviations); NaN for items without rows."""
    count, total = rows.reduce(lambda blk: (np.bincount(blk.item, minlength=n_items),
                                            np.bincount(blk.item, _fitted(blk, coef), n_items)))
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = total / count
        (squares,) = rows.reduce(lambda blk: (np.bincount(
            blk.item, (_fitted(blk, coef) - centre[blk.item]) ** 2, n_items),))
        return np.where(count > 0, np.sqrt(squares / count), np.nan)
