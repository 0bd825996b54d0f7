"""Empirical-Bayes priors for true item effects fitted from noisy estimates.

With thousands of items, many of them small, the largest raw estimates are mostly noise (the
winner's curse). Empirical Bayes pools all items: a prior for the true effects is fitted from
every item's estimate and standard error, and each item is summarised by its posterior, which
pulls noisy estimates towards the bulk of the distribution and leaves precise ones alone.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from threadpoolctl import threadpool_limits
from ..inference import critical_value

__all__ = ["EmpiricalBayesPrior", "prior_row_status"]

_POSTERIOR_COLUMNS = ["posterior_mean", "posterior_sd", "posterior_low", "posterior_high",
                      "prob_positive"]

# A row further than EXTREME robust spreads from the median effect is a units or data error
# (an effect of 1e308), and a row whose se is EXTREME spreads carries no information (its
# likelihood is flat over the data): either would set the prior's scale for every item, so
# neither enters the fit.
EXTREME = 1e6
# In the normal fit (not in the posteriors) ses are floored (``_se_floor``), at least at this
# share of their median: as one se -> 0 the marginal likelihood grows without bound at prior
# variance 0 with the prior mean on that item's estimate, which would give every item the
# same posterior mean.
SE_FLOOR = 1e-2


def _robust_scale(x, s) -> tuple[float, float]:
    """Centre (median effect) and spread (scaled MAD of the effects, at least the median
    se) of the estimates: the fit works on ``(x - centre) / spread``, where values are O(1)
    whatever the units, so no square overflows and the optimiser's bounds stay finite."""
    center = float(np.median(x))
    with np.errstate(over="ignore", invalid="ignore"):
        spread = max(1.4826 * float(np.median(np.abs(x - center))), float(np.median(s)))
    if not (np.isfinite(spread) and spread > 0):
        spread = 1.0
    return center, np.float64(spread)  # (its square overflows to inf, not to an error)


def _se_floor(t) -> float:
    """Floor of the standardised ses in the normal fit: no row counts as more precise than
    the second most precise one (so a single row cannot create the spike), nor than
    SE_FLOOR times the median; an se under 1 / EXTREME spreads is exact as far as the prior
    is concerned (the floor also keeps squares from underflowing to a zero variance)."""
    second = np.partition(t, 1)[1] if t.size > 1 else t[0]
    return max(second, SE_FLOOR * np.median(t), SE_FLOOR / EXTREME)


def prior_row_status(estimates, ses) -> np.ndarray:
    """Per row, "ok" or why it cannot inform the prior: "ate_extreme" (more than EXTREME
    robust spreads from the median effect) or "se_extreme" (an se of more than EXTREME
    spreads). Such rows are left out of the fit."""
    x, s = _check_estimates(estimates, ses)
    center, spread = _robust_scale(x, s)
    with np.errstate(over="ignore", invalid="ignore"):
        far = ~(np.abs((x - center) / spread) <= EXTREME)  # inf after the subtraction: far
        vague = ~(s / spread <= EXTREME)
    return np.where(far, "ate_extreme", np.where(vague, "se_extreme", "ok")).astype(object)


def _uniforms(uniforms, seed, shape) -> np.ndarray:
    """The given uniforms (checked against ``shape``) or fresh ones in (0, 1) from ``seed``
    (an int or a Generator), never 0 or 1, whose normal quantiles are infinite."""
    if uniforms is None:
        rng = np.random.default_rng(seed)
        return (rng.integers(0, 2**53, size=shape) + 0.5) / 2.0**53
    uniforms = np.asarray(uniforms, dtype=float)
    if uniforms.shape != tuple(shape):
        raise ValueError(f"uniforms have shape {uniforms.shape}, expected {tuple(shape)}")
    return uniforms


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
    loglik_ : marginal log-likelihood of the fitted estimates.  n_ : number of estimates
    fitted.  n_excluded_ : estimates left out of the fit (``prior_row_status``: one extreme
    row must not set the prior of every item).  center_, spread_ : the normal prior is
    fitted, and its posteriors computed, on ``(x - center_) / spread_`` (robust location and
    scale of the estimates), with ses floored at SE_FLOOR times their median in the fit.

    ``offset`` (per estimate; ``fit``, ``posterior``, ``sample``) moves each item's prior:
    the prior is for ``theta_i - offset_i``, e.g. around a covariate-predicted mean.
    """

    def __init__(self, kind: str = "npmle", grid_size: int = 300, max_iter: int = 1000,
                 tol: float = 1e-7):
        self.kind = kind
        self.grid_size = grid_size
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, estimates, ses, offset=0.0) -> "EmpiricalBayesPrior":
        if self.kind not in {"npmle", "normal"}:
            raise ValueError(f"prior must be 'npmle' or 'normal', got {self.kind!r}")
        x, s = _check_estimates(estimates, ses)
        x = x - offset
        if x.size == 0:
            raise ValueError("cannot fit a prior to zero estimates")
        keep = prior_row_status(x, s) == "ok"
        x, s = x[keep], s[keep]
        self.n_, self.n_excluded_ = x.size, int((~keep).sum())
        self.center_, self.spread_ = _robust_scale(x, s)
        if self.kind == "normal":
            self._fit_normal((x - self.center_) / self.spread_, s / self.spread_)
            self.grid_ = self.weights_ = None
        else:
            # small matrix-vector products: BLAS threads only add contention
            with threadpool_limits(limits=1, user_api="blas"):
                self._fit_npmle(x, s)
            self.mean_ = float(self.weights_ @ self.grid_)
            self.var_ = float(self.weights_ @ (self.grid_ - self.mean_) ** 2)
        self.loglik_ = self.loglik(x, s)
        return self

    def _fit_normal(self, z, t):
        """Maximum marginal likelihood on the standardised scale (``z``, ``t``)."""
        t = np.maximum(t, _se_floor(t))

        def profile(tau):  # the mean is profiled out: weighted mean given tau
            v = tau**2 + t**2
            mu = np.sum(z / v) / np.sum(1 / v)
            return mu, 0.5 * np.sum(np.log(v) + (z - mu) ** 2 / v)

        upper = 2 * np.ptp(z) + 1e-12  # the prior's sd cannot exceed the data's range
        res = optimize.minimize_scalar(lambda u: profile(u)[1], bounds=(0.0, upper),
                                       method="bounded", options={"xatol": 1e-10 * upper})
        tau = 0.0 if profile(0.0)[1] <= res.fun else float(res.x)  # the MLE may sit at 0
        self._mean_z, self._var_z = float(profile(tau)[0]), tau**2
        self.mean_ = float(self.center_ + self.spread_ * self._mean_z)
        with np.errstate(over="ignore"):  # e.g. one row with se 1e300: var_ is inf
            self.var_ = float((self.spread_ * tau) ** 2)

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
        with np.errstate(over="ignore"):
            log_lik = stats.norm.logpdf(x[:, None], self.grid_[None, :], s[:, None])
        row_max = log_lik.max(axis=1)
        exact = ~np.isfinite(row_max)  # an se so small that every density underflows:
        if exact.any():  # the limit se -> 0 puts the row's mass on its nearest grid point
            nearest = np.abs(x[exact, None] - self.grid_[None, :]).argmin(axis=1)
            log_lik[exact] = -np.inf
            log_lik[exact, nearest] = 0.0
        scaled = np.exp(log_lik - np.where(exact, 0.0, row_max)[:, None])
        return scaled, row_max

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

    def posterior(self, estimates, ses, alpha: float = 0.05, offset=0.0) -> pd.DataFrame:
        """Per-estimate posterior: mean, sd, equal-tailed ``1 - alpha`` interval, P(theta > 0)."""
        x, s = _check_estimates(estimates, ses)
        offset = np.broadcast_to(np.asarray(offset, dtype=float), x.shape)
        x = x - offset
        if self.kind == "normal":
            mean, sd = self._normal_posterior(x, s)
            z = critical_value(alpha)
            low, high = mean - z * sd, mean + z * sd
            with np.errstate(divide="ignore", invalid="ignore"):
                positive = np.where(sd > 0, stats.norm.sf(-offset, mean, sd),
                                    (mean > -offset) * 1.0)
        else:
            post = self._npmle_posterior_weights(x, s)
            mean = post @ self.grid_
            sd = np.sqrt(np.clip(post @ self.grid_**2 - mean**2, 0, None))
            cdf = np.cumsum(post, axis=1)
            low = self.grid_[np.argmax(cdf >= alpha / 2 - 1e-12, axis=1)]
            high = self.grid_[np.argmax(cdf >= 1 - alpha / 2 - 1e-12, axis=1)]
            positive = np.sum(post * (self.grid_[None, :] > -offset[:, None]), axis=1)
        mean, low, high = mean + offset, low + offset, high + offset
        index = estimates.index if isinstance(estimates, pd.Series) else None
        return pd.DataFrame(dict(zip(_POSTERIOR_COLUMNS, [mean, sd, low, high, positive])),
                            index=index)

    def _normal_posterior(self, x, s):
        """Posterior mean and sd under the normal prior, on the standardised scale: no
        square overflows (an se of 1e300 gives the prior back, one of 1e-300 the estimate)."""
        z, t = (x - self.center_) / self.spread_, s / self.spread_
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ratio = self._var_z / t**2  # prior variance over noise variance
            ratio = np.where(np.isnan(ratio), np.inf, ratio)  # 0 / 0: both exact, trust data
            weight = 1 / (1 + 1 / ratio)  # on the item's own estimate
            mean_z = weight * z + (1 / (1 + ratio)) * self._mean_z
            var_z = self._var_z / (1 + ratio)
        return self.center_ + self.spread_ * mean_z, self.spread_ * np.sqrt(var_z)

    def sample(self, estimates, ses, n_draws: int = 1000, seed=0, offset=0.0,
               uniforms=None) -> np.ndarray:
        """Independent posterior draws, shape ``(n_estimates, n_draws)``, by inverse CDF of
        ``uniforms`` (that shape, in (0, 1); default from ``seed``'s generator): a row's
        draws depend on its own uniforms only (``rank_items`` gives each item its own)."""
        x, s = _check_estimates(estimates, ses)
        uniforms = _uniforms(uniforms, seed, (x.size, n_draws))
        if self.kind == "normal":
            post = self.posterior(x, s, offset=offset)
            return post["posterior_mean"].to_numpy()[:, None] + post["posterior_sd"].to_numpy()[
                :, None] * special.ndtri(uniforms)
        offset = np.broadcast_to(np.asarray(offset, dtype=float), x.shape)
        # inverse-CDF sampling for all rows at once: shift row i's CDF by i, search once
        cdf = np.cumsum(self._npmle_posterior_weights(x - offset, s), axis=1)
        cdf[:, -1] = 1.0
        offsets = np.arange(x.size)[:, None]
        flat = (cdf + offsets).ravel()
        hits = np.searchsorted(flat, uniforms + offsets, side="right")
        return self.grid_[np.minimum(hits - offsets * self.grid_size, self.grid_size - 1)] \
            + offset[:, None]

    def summary(self) -> dict:
        """Fitted prior as plain Python values (safe for ``DataFrame.attrs`` and JSON)."""
        out = {"kind": self.kind, "n": int(self.n_), "mean": self.mean_, "var": self.var_,
               "loglik": self.loglik_}
        if self.kind == "npmle":
            out.update(grid=self.grid_.tolist(), weights=self.weights_.tolist())
        return out
