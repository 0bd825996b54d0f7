"""Covariate-powered empirical Bayes: a normal prior whose mean (and optionally log-spread)
is linear in what is known about items before their effects are seen.

Model (Ignatiadis & Wager, "Covariate-powered empirical Bayes estimation", 2019, in its
parametric form; Fay & Herriot 1979): ``x_i ~ N(theta_i, s_i^2)``,
``theta_i ~ N(z_i' beta, tau^2 exp(w_i' gamma))``. The hyperparameters are fitted across items
by restricted (beta integrated out) maximum marginal likelihood. Posterior intervals do not
plug the fitted values in: beta is integrated out exactly (flat prior: normal given tau) and
tau over a grid weighted by its restricted likelihood (uniform prior on tau), so items whose
posterior leans on the prior mean carry that mean's uncertainty (Morris 1983; Kass & Steffey
1989). The spread coefficients gamma, when fitted, are held at their estimate.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, special

from .prior import _POSTERIOR_COLUMNS, _check_estimates

__all__ = ["CovariatePrior", "covariate_matrix"]

SPREADS = ("constant", "covariates")
# ridge on the spread coefficients (standardised columns): log-variance ratios beyond ~+-3
# between items are rarely supported by a few hundred noisy estimates
SPREAD_PENALTY = 0.5
# the tau grid spans the region where the restricted log-likelihood is within this of its max
GRID_DROP = 20.0


def covariate_matrix(covariates: pd.DataFrame, items) -> tuple[np.ndarray, list[str]]:
    """Numeric matrix of item covariates in the order of ``items``.

    ``covariates`` is indexed by item or has an ``item`` column. Numeric and boolean columns
    are standardised; other columns (strings, categoricals) are one-hot encoded, dropping the
    first level. Columns constant over ``items`` are dropped. Returns (matrix, column names);
    no intercept column.
    """
    if not isinstance(covariates, pd.DataFrame):
        raise TypeError(f"covariates must be a DataFrame, got {type(covariates).__name__}")
    frame = covariates.set_index("item") if "item" in covariates.columns else covariates
    if frame.index.has_duplicates:
        duplicated = frame.index[frame.index.duplicated()].unique().tolist()[:5]
        raise ValueError(f"covariates has more than one row for item(s) {duplicated}")
    items = pd.Index(items)
    position = frame.index.get_indexer(items)
    if np.any(position < 0):
        missing = items[position < 0]
        raise ValueError(f"covariates lack {len(missing)} item(s) of the effects table, "
                         f"e.g. {missing[:5].tolist()}")
    frame = frame.iloc[position]
    blocks, names = [], []
    for column in frame.columns:
        values = frame[column]
        if values.isna().any():
            raise ValueError(f"covariates column {column!r} has missing values")
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            values = values.to_numpy(float)
            if np.ptp(values) > 0:
                blocks.append(((values - values.mean()) / values.std())[:, None])
                names.append(str(column))
        elif (pd.api.types.is_string_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype)
              or values.dtype == object):
            levels = np.unique(values.astype(str).to_numpy())
            codes = values.astype(str).to_numpy()
            for level in levels[1:]:
                blocks.append((codes == level).astype(float)[:, None])
                names.append(f"{column}={level}")
        else:
            raise ValueError(f"covariates column {column!r} has unsupported dtype {values.dtype}; "
                             "use numeric, boolean or string/categorical columns")
    matrix = np.hstack(blocks) if blocks else np.empty((len(items), 0))
    return matrix, names


class CovariatePrior:
    """Normal prior with covariate-dependent mean (and spread), hyperparameters integrated.

    Parameters
    ----------
    spread : "constant" (default): one prior variance ``tau^2`` for every item;
        "covariates": ``log`` prior variance linear in the covariates (ridge-penalised).
    grid_size : grid points over ``tau`` for integrating its uncertainty.

    Attributes (after ``fit``)
    --------------------------
    coef_, coef_se_ : prior-mean coefficients (``intercept`` first, standardised covariates)
        at the fitted ``tau_``, and their standard errors, as Series.
    tau_ : restricted maximum-likelihood prior sd (for "covariates": at average covariates).
    spread_coef_ : Series of log-variance coefficients (empty for "constant").
    tau_grid_, tau_weights_ : the grid over tau and its posterior weights.
    loglik_ : restricted marginal log-likelihood at the fit.  n_ : number of estimates.
    """

    def __init__(self, spread: str = "constant", grid_size: int = 64):
        self.spread = spread
        self.grid_size = grid_size

    # ------------------------------------------------------------------ fit
    def fit(self, estimates, ses, covariates, names=None) -> "CovariatePrior":
        """Fit to estimates, their SEs and an ``(n, q)`` covariate matrix (no intercept)."""
        if self.spread not in SPREADS:
            raise ValueError(f"spread must be one of {list(SPREADS)}, got {self.spread!r}")
        if int(self.grid_size) != self.grid_size or self.grid_size < 8:
            raise ValueError(f"grid_size must be an integer >= 8, got {self.grid_size!r}")
        x, s = _check_estimates(estimates, ses)
        covariates = self._check_covariates(covariates, x.size)
        z = np.hstack([np.ones((x.size, 1)), covariates])
        if x.size < z.shape[1] + 2:
            raise ValueError(f"{z.shape[1]} prior-mean coefficients need at least "
                             f"{z.shape[1] + 2} estimates, got {x.size}")
        if np.linalg.matrix_rank(z) < z.shape[1]:
            raise ValueError("covariate columns are collinear (with each other or the intercept)")
        self.names_ = ["intercept"] + (list(names) if names is not None else
                                       [f"z{j}" for j in range(covariates.shape[1])])
        self.n_ = x.size
        w = covariates - covariates.mean(axis=0) if self.spread == "covariates" else covariates[:, :0]
        gamma = np.zeros(w.shape[1])
        tau = self._fit_tau(x, s, z, np.ones(x.size))
        if w.shape[1] and tau > 0:
            tau, gamma = self._fit_spread(x, s, z, w, tau)
        self.tau_, self.spread_coef_ = tau, pd.Series(gamma, index=self.names_[1:] if w.shape[1] else [],
                                                       dtype=float)
        self._shape = np.exp(w @ gamma)  # variance ratio of each fitted item
        self.loglik_, beta, gram = _restricted(x, s, z, tau**2 * self._shape)
        self.coef_ = pd.Series(beta, index=self.names_)
        self.coef_se_ = pd.Series(np.sqrt(np.diag(np.linalg.inv(gram))), index=self.names_)
        self._covariate_mean, self._gamma = covariates.mean(axis=0), gamma
        self._fit_grid(x, s, z)
        return self

    @staticmethod
    def _check_covariates(covariates, n):
        covariates = np.asarray(covariates, dtype=float)
        if covariates.ndim != 2 or covariates.shape[0] != n:
            raise ValueError(f"covariates must be a 2-d array with one row per estimate ({n})")
        if not np.all(np.isfinite(covariates)):
            raise ValueError("covariates must be finite")
        return covariates

    def _fit_tau(self, x, s, z, shape):
        upper = 2 * np.ptp(x) + 1e-12
        objective = lambda t: -_restricted(x, s, z, t**2 * shape)[0]  # noqa: E731
        res = optimize.minimize_scalar(objective, bounds=(0.0, upper), method="bounded",
                                       options={"xatol": 1e-10 * upper})
        return 0.0 if objective(0.0) <= res.fun else float(res.x)  # the MLE may sit at 0

    def _fit_spread(self, x, s, z, w, tau):
        scale = np.std(w, axis=0)

        def objective(params):
            gamma = params[1:]
            return (-_restricted(x, s, z, np.exp(2 * params[0] + w @ gamma))[0]
                    + 0.5 * SPREAD_PENALTY * np.sum((gamma * scale) ** 2))

        res = optimize.minimize(objective, np.r_[np.log(tau), np.zeros(w.shape[1])],
                                method="L-BFGS-B")
        return float(np.exp(res.x[0])), res.x[1:]

    def _fit_grid(self, x, s, z):
        """Grid over tau where the restricted likelihood is not negligible, its weights, and
        the normal posterior of beta at each grid point."""
        fits = lambda grid: [_restricted(x, s, z, t**2 * self._shape) for t in grid]  # noqa: E731
        upper = self.tau_ + np.sqrt(np.mean(s**2))
        for _ in range(60):  # widen until the likelihood at the top has dropped enough
            if fits([upper])[0][0] < self.loglik_ - GRID_DROP:
                break
            upper *= 2
        coarse = np.linspace(0.0, upper, self.grid_size)
        keep = np.flatnonzero(np.array([f[0] for f in fits(coarse)]) > self.loglik_ - GRID_DROP)
        low = coarse[max(keep[0] - 1, 0)]
        high = coarse[min(keep[-1] + 1, coarse.size - 1)]
        # midpoints of equal cells: a uniform prior on tau integrated by the midpoint rule
        edges = np.linspace(low, high, self.grid_size + 1)
        grid = 0.5 * (edges[1:] + edges[:-1])
        at_grid = fits(grid)
        values = np.array([f[0] for f in at_grid])
        weights = np.exp(values - values.max())
        keep = weights > 1e-12 * weights.sum()  # negligible grid points cost time only
        self.tau_grid_, self.tau_weights_ = grid, weights / weights.sum()
        self._grid = [(w, t, beta, np.linalg.inv(gram)) for w, t, (_, beta, gram), k in
                      zip(self.tau_weights_, grid, at_grid, keep) if k]

    # ------------------------------------------------------------ posterior
    def _components(self, x, s, covariates):
        """Per grid point k (tau_k, beta integrated out): weight, posterior means and
        variances of every item, its pull towards the prior mean, beta's mean and covariance."""
        covariates = self._check_covariates(covariates, x.size)
        if covariates.shape[1] != len(self.names_) - 1:
            raise ValueError(f"covariates have {covariates.shape[1]} columns, the prior was "
                             f"fitted with {len(self.names_) - 1}")
        z = np.hstack([np.ones((x.size, 1)), covariates])
        shape = np.exp((covariates - self._covariate_mean) @ self._gamma)
        total = sum(part[0] for part in self._grid)
        out = []
        for weight, tau, beta, beta_cov in self._grid:
            pull = s**2 / (s**2 + tau**2 * shape)
            mean = x - pull * (x - z @ beta)
            var = (1 - pull) * s**2 + pull**2 * np.einsum("ij,jk,ik->i", z, beta_cov, z)
            out.append((weight / total, mean, var, pull, beta, beta_cov, z))
        return out

    def posterior(self, estimates, ses, covariates, alpha: float = 0.05) -> pd.DataFrame:
        """Per-estimate posterior mean, sd, equal-tailed ``1 - alpha`` interval, P(theta > 0)."""
        x, s = _check_estimates(estimates, ses)
        parts = self._components(x, s, covariates)
        w = np.array([p[0] for p in parts])
        m = np.stack([p[1] for p in parts], axis=1)
        v = np.stack([p[2] for p in parts], axis=1)
        sd = np.sqrt(v)
        mean = m @ w
        total_sd = np.sqrt(np.clip((v + m**2) @ w - mean**2, 0, None))
        low = _mixture_quantile(w, m, sd, alpha / 2)
        high = _mixture_quantile(w, m, sd, 1 - alpha / 2)
        positive = special.ndtr(m / sd) @ w
        index = estimates.index if isinstance(estimates, pd.Series) else None
        return pd.DataFrame(dict(zip(_POSTERIOR_COLUMNS, [mean, total_sd, low, high, positive])),
                            index=index)

    def sample(self, estimates, ses, covariates, n_draws: int = 1000, seed=0) -> np.ndarray:
        """Joint posterior draws, shape ``(n_estimates, n_draws)``: tau, then beta, are drawn
        per draw and shared by all items, so the draws carry the items' common uncertainty."""
        x, s = _check_estimates(estimates, ses)
        rng = np.random.default_rng(seed)
        parts = self._components(x, s, covariates)
        w = np.array([p[0] for p in parts])
        which = rng.choice(len(parts), size=n_draws, p=w / w.sum())  # renormalise rounding
        draws = np.empty((x.size, n_draws))
        for k in np.unique(which):
            _, _, _, pull, beta, beta_cov, z = parts[k]
            cols = np.flatnonzero(which == k)
            betas = rng.multivariate_normal(beta, beta_cov, size=cols.size, method="cholesky").T
            mean = x[:, None] - pull[:, None] * (x[:, None] - z @ betas)
            draws[:, cols] = mean + np.sqrt((1 - pull) * s**2)[:, None] * rng.standard_normal(
                (x.size, cols.size))
        return draws

    def linear_posterior(self, shares, estimates, ses, covariates) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of ``shares @ theta`` for each row of ``shares`` (m, n),
        counting the covariance the shared hyperparameters induce between items."""
        x, s = _check_estimates(estimates, ses)
        shares = np.atleast_2d(np.asarray(shares, dtype=float))
        parts = self._components(x, s, covariates)
        means, second = np.zeros(shares.shape[0]), np.zeros(shares.shape[0])
        for weight, mean, _, pull, beta, beta_cov, z in parts:
            value = shares @ mean
            through_beta = (shares * pull) @ z  # d value / d beta
            var = shares**2 @ ((1 - pull) * s**2) + np.einsum("ij,jk,ik->i", through_beta,
                                                               beta_cov, through_beta)
            means += weight * value
            second += weight * (var + value**2)
        return means, np.sqrt(np.clip(second - means**2, 0, None))

    def summary(self) -> dict:
        """Fitted prior as plain Python values (safe for ``DataFrame.attrs`` and JSON)."""
        return {"kind": "covariates", "spread": self.spread, "n": int(self.n_),
                "tau": float(self.tau_), "coef": {k: float(v) for k, v in self.coef_.items()},
                "coef_se": {k: float(v) for k, v in self.coef_se_.items()},
                "spread_coef": {k: float(v) for k, v in self.spread_coef_.items()},
                "loglik": float(self.loglik_)}


def _restricted(x, s, z, prior_var):
    """Restricted log-likelihood of ``x ~ N(z beta, s^2 + prior_var)`` with beta integrated
    out under a flat prior; returns (loglik, GLS beta, Gram matrix ``z' D z``)."""
    precision = 1.0 / (s**2 + prior_var)
    gram = z.T @ (z * precision[:, None])
    beta = np.linalg.solve(gram, z.T @ (precision * x))
    resid = x - z @ beta
    _, logdet = np.linalg.slogdet(gram)
    return -0.5 * (np.sum(np.log(s**2 + prior_var)) + logdet + precision @ resid**2), beta, gram


def _mixture_quantile(w, m, sd, q, n_iter=60):
    """Quantile ``q`` of each row's normal mixture (weights w, means m, sds sd) by bisection."""
    low = np.min(m - 10 * sd, axis=1)
    high = np.max(m + 10 * sd, axis=1)
    for _ in range(n_iter):
        mid = 0.5 * (low + high)
        below = special.ndtr((mid[:, None] - m) / sd) @ w < q
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    return 0.5 * (low + high)
