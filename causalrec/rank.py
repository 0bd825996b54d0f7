"""Rank items by shrunk causal effects and compare recommendation policies.

With thousands of items, many of them small, the largest raw estimates are mostly noise (the
winner's curse). Empirical Bayes pools all items: a prior for the true effects is fitted from
every item's estimate and standard error, and each item is summarised by its posterior, which
pulls noisy estimates towards the bulk of the distribution and leaves precise ones alone.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats
from threadpoolctl import threadpool_limits

__all__ = ["EmpiricalBayesPrior", "rank_items", "compare_policies"]

_POSTERIOR_COLUMNS = ["posterior_mean", "posterior_sd", "posterior_low", "posterior_high",
                      "prob_positive"]
_RANK_KEYS = {"posterior_mean": "posterior_mean", "lower_bound": "posterior_low", "ate": "ate"}


def _check_estimates(estimates, ses) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(estimates, dtype=float).ravel()
    s = np.asarray(ses, dtype=float).ravel()
    if x.shape != s.shape:
        raise ValueError(f"estimates and ses differ in length ({x.size} vs {s.size})")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(s))):
        raise ValueError("estimates and ses must be finite")
    if np.any(s <= 0):
        raise ValueError("ses must be positive")
    return x, s


class EmpiricalBayesPrior:
    """Prior for true effects fitted from noisy estimates ``x_i ~ N(theta_i, s_i^2)``.

    Parameters
    ----------
    kind : "npmle" or "normal".
        "normal": ``theta ~ N(mean, var)``, mean and variance by maximum marginal likelihood.
        "npmle": the nonparametric maximum-likelihood mixing distribution (Koenker & Mizera
        2014, Gu & Koenker), a discrete distribution on a fixed equally spaced grid spanning the
        estimates, fitted by EM. It adapts to sparse and skewed effect distributions where a
        normal prior over-shrinks the few large effects.
    grid_size, max_iter, tol : grid points and EM stopping rule (NPMLE only); EM stops when
        the log-likelihood gains less than ``tol`` per iteration.

    Attributes (after ``fit``)
    --------------------------
    mean_, var_ : mean and variance of the fitted prior.
    grid_, weights_ : support points and their probabilities (for "normal", None).
    loglik_ : marginal log-likelihood of the fitted estimates.  n_ : number of estimates.
    """

    def __init__(self, kind: str = "npmle", grid_size: int = 300, max_iter: int = 1000,
                 tol: float = 1e-7):
        self.kind = kind
        self.grid_size = grid_size
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, estimates, ses) -> "EmpiricalBayesPrior":
        if self.kind not in {"npmle", "normal"}:
            raise ValueError(f"prior must be 'npmle' or 'normal', got {self.kind!r}")
        x, s = _check_estimates(estimates, ses)
        if x.size == 0:
            raise ValueError("cannot fit a prior to zero estimates")
        self.n_ = x.size
        if self.kind == "normal":
            self._fit_normal(x, s)
            self.grid_ = self.weights_ = None
        else:
            # small matrix-vector products: BLAS threads only add contention
            with threadpool_limits(limits=1, user_api="blas"):
                self._fit_npmle(x, s)
            self.mean_ = float(self.weights_ @ self.grid_)
            self.var_ = float(self.weights_ @ (self.grid_ - self.mean_) ** 2)
        self.loglik_ = self.loglik(x, s)
        return self

    def _fit_normal(self, x, s):
        def profile(tau):  # the mean is profiled out: weighted mean given tau
            v = tau**2 + s**2
            mu = np.sum(x / v) / np.sum(1 / v)
            return mu, 0.5 * np.sum(np.log(v) + (x - mu) ** 2 / v)

        upper = 2 * np.ptp(x) + 1e-12
        res = optimize.minimize_scalar(lambda t: profile(t)[1], bounds=(0.0, upper),
                                       method="bounded", options={"xatol": 1e-10 * upper})
        tau = 0.0 if profile(0.0)[1] <= res.fun else float(res.x)  # the MLE may sit at 0
        self.mean_, self.var_ = float(profile(tau)[0]), tau**2

    def _fit_npmle(self, x, s):
        self.grid_ = np.linspace(x.min(), x.max(), self.grid_size)
        lik, _ = self._scaled_likelihood(x, s)
        w = np.full(self.grid_size, 1.0 / self.grid_size)
        previous = -np.inf
        for _ in range(self.max_iter):
            f = lik @ w
            current = np.sum(np.log(f))
            w = w * (lik.T @ (1 / f)) / x.size  # EM: average posterior mass per grid point
            w /= w.sum()
            if current - previous < self.tol:
                break
            previous = current
        self.weights_ = w

    def _scaled_likelihood(self, x, s):
        """Normal likelihood of each estimate at each grid point, rescaled per row so the
        largest entry is 1 (avoids underflow for precise estimates); returns log row scales."""
        log_lik = stats.norm.logpdf(x[:, None], self.grid_[None, :], s[:, None])
        row_max = log_lik.max(axis=1)
        return np.exp(log_lik - row_max[:, None]), row_max

    def loglik(self, estimates, ses) -> float:
        """Marginal log-likelihood ``sum_i log integral N(x_i; theta, s_i^2) dG(theta)``."""
        x, s = _check_estimates(estimates, ses)
        if self.kind == "normal":
            return float(np.sum(stats.norm.logpdf(x, self.mean_, np.sqrt(self.var_ + s**2))))
        lik, row_max = self._scaled_likelihood(x, s)
        return float(np.sum(np.log(lik @ self.weights_) + row_max))

    def _npmle_posterior_weights(self, x, s):
        post = self._scaled_likelihood(x, s)[0] * self.weights_
        return post / post.sum(axis=1, keepdims=True)

    def posterior(self, estimates, ses, alpha: float = 0.05) -> pd.DataFrame:
        """Per-estimate posterior: mean, sd, equal-tailed ``1 - alpha`` interval, P(theta > 0)."""
        x, s = _check_estimates(estimates, ses)
        if self.kind == "normal":
            shrink = self.var_ / (self.var_ + s**2)  # weight on the item's own estimate
            mean = shrink * x + (1 - shrink) * self.mean_
            sd = np.sqrt(shrink * s**2)
            z = stats.norm.ppf(1 - alpha / 2)
            low, high = mean - z * sd, mean + z * sd
            with np.errstate(divide="ignore", invalid="ignore"):
                positive = np.where(sd > 0, stats.norm.sf(0, mean, sd), (mean > 0) * 1.0)
        else:
            post = self._npmle_posterior_weights(x, s)
            mean = post @ self.grid_
            sd = np.sqrt(np.clip(post @ self.grid_**2 - mean**2, 0, None))
            cdf = np.cumsum(post, axis=1)
            low = self.grid_[np.argmax(cdf >= alpha / 2 - 1e-12, axis=1)]
            high = self.grid_[np.argmax(cdf >= 1 - alpha / 2 - 1e-12, axis=1)]
            positive = post @ (self.grid_ > 0)
        index = estimates.index if isinstance(estimates, pd.Series) else None
        return pd.DataFrame(dict(zip(_POSTERIOR_COLUMNS, [mean, sd, low, high, positive])),
                            index=index)

    def sample(self, estimates, ses, n_draws: int = 1000, seed=0) -> np.ndarray:
        """Independent posterior draws, shape ``(n_estimates, n_draws)``."""
        x, s = _check_estimates(estimates, ses)
        rng = np.random.default_rng(seed)
        if self.kind == "normal":
            post = self.posterior(x, s)
            return post["posterior_mean"].to_numpy()[:, None] + post["posterior_sd"].to_numpy()[
                :, None] * rng.standard_normal((x.size, n_draws))
        # inverse-CDF sampling for all rows at once: offset row i's CDF by i, search once
        cdf = np.cumsum(self._npmle_posterior_weights(x, s), axis=1)
        cdf[:, -1] = 1.0
        offsets = np.arange(x.size)[:, None]
        flat = (cdf + offsets).ravel()
        hits = np.searchsorted(flat, rng.random((x.size, n_draws)) + offsets, side="right")
        return self.grid_[np.minimum(hits - offsets * self.grid_size, self.grid_size - 1)]

    def summary(self) -> dict:
        """Fitted prior as plain Python values (safe for ``DataFrame.attrs`` and JSON)."""
        out = {"kind": self.kind, "n": int(self.n_), "mean": self.mean_, "var": self.var_,
               "loglik": self.loglik_}
        if self.kind == "npmle":
            out.update(grid=self.grid_.tolist(), weights=self.weights_.tolist())
        return out


def _prob_top_k(prior, x, s, k, n_draws, seed) -> np.ndarray:
    """Share of joint posterior draws in which each item is among the k largest effects."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(x.size)
    batch = max(1, min(n_draws, 2_000_000 // max(x.size, 1)))  # bound memory per batch
    for start in range(0, n_draws, batch):
        draws = prior.sample(x, s, min(batch, n_draws - start), seed=rng)
        # random tie-breaking: NPMLE draws share grid points, a normal prior may have var 0
        draws = draws + rng.random(draws.shape) * 1e-9 * (np.ptp(x) + 1e-300)
        top = np.argpartition(-draws, k - 1, axis=0)[:k]
        counts += np.bincount(top.ravel(), minlength=x.size)
    return counts / n_draws


def _shrink(effects: pd.DataFrame, prior: str, alpha: float, required=()):
    """Validate ``effects``, fit the prior on its usable rows and add posterior columns.

    Returns (copy of effects with posterior columns, mask of usable rows, fitted prior)."""
    missing = [c for c in ("item", "ate", "se", *required) if c not in effects.columns]
    if missing:
        raise ValueError(f"effects lacks required column(s) {missing}")
    if prior not in {"npmle", "normal"}:
        raise ValueError(f"prior must be 'npmle' or 'normal', got {prior!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    ate = pd.to_numeric(effects["ate"], errors="coerce").to_numpy(float)
    se = pd.to_numeric(effects["se"], errors="coerce").to_numpy(float)
    if np.any(se < 0):
        raise ValueError("column 'se': standard errors must be non-negative")
    ok = np.isfinite(ate) & np.isfinite(se) & (se > 0)  # se == 0: no usable likelihood
    if "status" in effects.columns:
        ok &= (effects["status"] == "ok").to_numpy()
    if not ok.any():
        raise ValueError("no rows with status 'ok', finite ate and positive se")
    fitted = EmpiricalBayesPrior(prior).fit(ate[ok], se[ok])
    out = effects.copy()
    for column in _POSTERIOR_COLUMNS:
        out[column] = np.nan
    out.loc[ok, _POSTERIOR_COLUMNS] = fitted.posterior(ate[ok], se[ok], alpha=alpha).to_numpy()
    return out, ok, fitted


def rank_items(effects: pd.DataFrame, by: str = "posterior_mean", k: int | None = None,
               prior: str = "normal", alpha: float = 0.05, fdr: float = 0.1, *,
               n_draws: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Rank items by empirical-Bayes shrunk effects.

    Parameters
    ----------
    effects : per-item effects (from ``estimate_item_effects``) with columns ``item, ate, se``
        and optionally ``status``. Rows with status "ok", finite ``ate`` and ``se > 0`` enter
        the prior fit and the ranking; the others are kept with NaN posterior and rank.
    by : "posterior_mean", "lower_bound" (``posterior_low``: favours items known to help), or
        "ate" (raw estimate; subject to the winner's curse).
    k : return only the top k rows; also the k of ``prob_top_k`` (default min(10, n ok)).
    prior : "normal" (default) or "npmle" (see ``EmpiricalBayesPrior``). The NPMLE gives
        slightly better point estimates on sparse, skewed effects but its discrete support
        makes the intervals of extreme items too short (on the bundled sample, 53 items:
        posterior-interval coverage 0.70 vs 0.91 with the normal prior, same RMSE), so the
        default is the prior whose intervals are honest.
    alpha : posterior intervals are equal-tailed ``1 - alpha``.
    fdr : Benjamini-Hochberg level of the calls ``bh_positive`` / ``bh_negative``: BH on the
        two-sided p-values of ``ate / se``, direction from the sign of ``ate``; this controls
        the directional false discovery rate for independent items (Benjamini & Yekutieli
        2005). ``q_value`` is the BH-adjusted p-value.
    n_draws, seed : Monte Carlo draws for ``prob_top_k`` (fixed seed: reproducible).

    Returns
    -------
    A copy of ``effects`` sorted by ``rank`` (1 = best) with the added columns
    ``posterior_mean, posterior_sd, posterior_low, posterior_high, prob_positive, prob_top_k,
    q_value, bh_positive, bh_negative, rank``. ``attrs["prior"]`` holds the fitted prior's
    summary and ``attrs["top_k"]`` the k of ``prob_top_k``.

    With the NPMLE prior the posterior of an isolated extreme item can collapse onto one
    support point, so intervals of the very top items are too narrow (coverage across all
    items is near nominal); rank on posterior means, and read top items' intervals with care.
    """
    if by not in _RANK_KEYS:
        raise ValueError(f"by must be one of {sorted(_RANK_KEYS)}, got {by!r}")
    if not 0 < fdr < 1:
        raise ValueError(f"fdr must lie in (0, 1), got {fdr}")
    if k is not None and (int(k) != k or k < 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    out, ok, fitted = _shrink(effects, prior, alpha)
    ate, se = out["ate"].to_numpy(float)[ok], out["se"].to_numpy(float)[ok]
    top_k = min(int(k) if k is not None else 10, int(ok.sum()))
    out["prob_top_k"] = np.nan
    out.loc[ok, "prob_top_k"] = _prob_top_k(fitted, ate, se, top_k, n_draws, seed)
    out["q_value"] = np.nan
    out.loc[ok, "q_value"] = stats.false_discovery_control(2 * stats.norm.sf(np.abs(ate / se)))
    called = (out["q_value"] <= fdr).to_numpy()
    out["bh_positive"] = called & (out["ate"] > 0).to_numpy()
    out["bh_negative"] = called & (out["ate"] < 0).to_numpy()

    # ties on the ranking key (e.g. discrete NPMLE lower bounds) are broken by posterior mean
    order = np.lexsort((-out["posterior_mean"].to_numpy(), -out[_RANK_KEYS[by]].to_numpy()))
    order = order[ok[order]]
    out["rank"] = np.nan
    out.iloc[order, out.columns.get_loc("rank")] = np.arange(1, order.size + 1, dtype=float)
    out = out.sort_values("rank", kind="stable", na_position="last")
    if k is not None:
        out = out.head(int(k))
    out.attrs.update(prior=fitted.summary(), top_k=top_k, by=by)
    return out


def compare_policies(effects: pd.DataFrame, k: int = 10, popularity: str = "naive_ate",
                     prior: str = "npmle", weights: str = "uniform",
                     alpha: float = 0.05) -> pd.DataFrame:
    """Incremental outcome per recommendation of three policies, with intervals.

    Policies: "causal_top_k" recommends the k items with the largest posterior mean effect;
    "naive_top_k" the k items with the largest ``popularity`` column (a naive click rate, or
    the unadjusted treated-minus-control difference ``naive_ate``); "logging" is what the
    logging policy did: its recommendations spread over items in proportion to ``n_treated``.
    A top-k policy spreads its recommendations over its k items equally
    (``weights="uniform"``) or in proportion to their opportunities ``n`` (``weights="n"``).
    Only items with a usable estimate (see ``rank_items``) are considered.

    Value of a policy = sum over items of (its share of recommendations) x (item effect).
    The top-k policies choose their items from the same data that estimate the effects, so
    valuing them at the raw ``ate`` is biased upward (winner's curse: the causal top-k is
    chosen *because* its estimates are high; the naive score shares the treated rows' noise).
    They are therefore valued at the items' empirical-Bayes *posterior means*, which stay
    calibrated under selection on the data when the fitted prior is right; ``se`` combines
    the items' posterior sds (independent items), ignoring the fitted prior's own
    uncertainty. (A split, choosing on one half of the data and valuing on the other, would
    need per-fold estimates the effects table does not carry.) The logging policy's shares
    are fixed in advance, so it is valued at the raw ``ate``, unbiased with ``se`` from the
    items' ``se``. ``raw_incremental`` is the raw plug-in value of every policy, for contrast.

    Returns a DataFrame ``policy, k, incremental, se, ci_low, ci_high, raw_incremental``
    (``k``: the number of items the policy recommends); intervals are ``+- z se``.
    """
    if weights not in {"uniform", "n"}:
        raise ValueError(f"weights must be 'uniform' or 'n', got {weights!r}")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    required = [popularity, "n_treated"] + (["n"] if weights == "n" else [])
    out, ok, _ = _shrink(effects, prior, alpha, required=required)
    items = out[ok].reset_index(drop=True)
    if k > len(items):
        raise ValueError(f"k={k} exceeds the {len(items)} items with a usable estimate")

    def top_k_shares(score):
        chosen = np.argsort(-items[score].to_numpy(float), kind="stable")[:k]
        share = np.zeros(len(items))
        share[chosen] = 1.0 if weights == "uniform" else items["n"].to_numpy(float)[chosen]
        return share

    policies = [("causal_top_k", top_k_shares("posterior_mean"), "posterior_mean", "posterior_sd"),
                ("naive_top_k", top_k_shares(popularity), "posterior_mean", "posterior_sd"),
                ("logging", items["n_treated"].to_numpy(float), "ate", "se")]
    z = stats.norm.ppf(1 - alpha / 2)
    rows = []
    for policy, share, value_column, se_column in policies:
        if share.sum() <= 0:
            raise ValueError(f"policy {policy!r} recommends none of the usable items")
        share = share / share.sum()
        value = float(share @ items[value_column])
        se = float(np.sqrt(share**2 @ items[se_column] ** 2))
        rows.append(dict(policy=policy, k=int(np.count_nonzero(share)), incremental=value,
                         se=se, ci_low=value - z * se, ci_high=value + z * se,
                         raw_incremental=float(share @ items["ate"])))
    return pd.DataFrame(rows)
