"""Covariate-powered empirical Bayes: a normal prior whose mean is linear in what is known
about items before their effects are seen.

Model (Ignatiadis & Wager, "Covariate-powered empirical Bayes estimation", 2019, in its
parametric form; Fay & Herriot 1979): ``x_i ~ N(theta_i, s_i^2)``,
``theta_i ~ N(z_i' beta, tau^2)``, each covariate's coefficients ``~ N(0, omega_g^2)`` (the
intercept's flat). tau and the relevances omega are fitted across items by maximum marginal
likelihood (beta integrated out, as in restricted ML): a covariate that does not predict the
effects gets omega ~ 0 and costs nothing. The posterior does not plug tau and beta in: beta
is integrated out exactly (normal given tau) and tau over a grid weighted by its likelihood
(uniform prior on tau), so items whose posterior leans on the prior mean carry that mean's
uncertainty (Morris 1983; Kass & Steffey 1989); the relevances are held at their estimates.
Intervals are by default the robust EBCIs of ``robust.py``, valid whatever the shape of the
effects' distribution around the prior mean.

The estimate's own precision may predict the effect (Chen 2023, "Empirical Bayes when
estimation precision predicts parameters"); with ``use_se``, ``log s_i`` joins the mean's
covariates and the prior variance is ``tau^2 (s_i / s_ref)^gamma``. That presumes errors
independent of their SEs; the estimator's are not (a binary outcome's SE grows with its
estimated rate): on its estimates ``use_se`` lowered precision@20 from 0.33 to 0.22, so it
is off by default. (A log-spread linear in all covariates was tried and dropped: its
intervals covered 0.75-0.87 on the simulator.)
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, special

from ..utils.levels import reference_first
from .prior import _POSTERIOR_COLUMNS, _check_estimates, _uniforms
from .robust import robust_critical_values

__all__ = ["CovariatePrior", "covariate_matrix"]

INTERVALS = ("robust", "posterior")
SPREAD_BOUNDS = (-2.0, 4.0)  # prior variance proportional to se^gamma
# kurtosis moments weighted by (s^2 + prior variance)^-2, not ^-4 (the inverse variance of the
# fourth-moment terms), which leans on the few most precise items: over 12 simulated logs,
# coverage 0.941 vs 0.938 with the estimator's SEs, 0.967 vs 0.971 with binomial SEs
KURTOSIS_POWER = 2
# bounds of the fitted sds (tau, relevances), relative to the spread of the estimates
FLOOR, OMEGA_CAP = 1e-6, 1e3
# the tau grid spans the region where the restricted log-likelihood is within this of its max
GRID_DROP = 20.0


def covariate_matrix(covariates: pd.DataFrame, items) -> tuple[np.ndarray, list[str], list[str]]:
    """Numeric matrix of item covariates in the order of ``items``.

    ``covariates`` is indexed by item or has an ``item`` column. Numeric and boolean columns
    are standardised; other columns (strings, categoricals) are one-hot encoded, dropping the
    most frequent level (ties by label). Columns constant over ``items`` are dropped. Returns (matrix, column names,
    the covariate each column comes from); no intercept column.
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
    blocks, names, groups = [], [], []
    for column in frame.columns:
        values = frame[column]
        if values.isna().any():
            raise ValueError(f"covariates column {column!r} has missing values")
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            values = values.to_numpy(float)
            if np.ptp(values) > 0:
                blocks.append(((values - values.mean()) / values.std())[:, None])
                names.append(str(column))
                groups.append(str(column))
        elif (pd.api.types.is_string_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype)
              or values.dtype == object):
            codes = values.astype(str).to_numpy()
            # the reference first, as in the estimator's design: renaming a level cannot
            # move what the shrunk coefficients mean
            for level in reference_first(*np.unique(codes, return_counts=True))[1:]:
                blocks.append((codes == level).astype(float)[:, None])
                names.append(f"{column}={level}")
                groups.append(str(column))
        else:
            raise ValueError(f"covariates column {column!r} has unsupported dtype {values.dtype}; "
                             "use numeric, boolean or string/categorical columns")
    matrix = np.hstack(blocks) if blocks else np.empty((len(items), 0))
    return matrix, names, groups


class CovariatePrior:
    """Normal prior with a covariate-dependent mean; hyperparameters fitted, then integrated.

    Parameters
    ----------
    use_se : let the prior mean (through ``log se``, with its own relevance) and the prior
        variance (a fitted power of ``se``) depend on each estimate's standard error
        (default False; see the module notes).
    interval : "robust" (default): ``posterior_mean +- cva * sd`` with the critical value of
        Armstrong, Kolesar & Plagborg-Moller (2022) for the fitted variance and kurtosis of
        the effects around the prior mean, and sd that of the estimate's noise (beta's
        uncertainty included); "posterior": equal-tailed quantiles of the normal-prior
        posterior (exact only if effects are normal around the prior mean).
    grid_size : grid points over ``tau`` for integrating its uncertainty.

    Attributes (after ``fit``)
    --------------------------
    coef_, coef_se_ : prior-mean coefficients (``intercept`` first, then the covariate
        columns as given) and their posterior sds at the fitted ``tau_``, as Series.
    tau_ : prior sd of the effects around the prior mean (at the geometric-mean se).
    spread_power_ : gamma, the power of ``se`` in the prior variance (0 without ``use_se``).
    relevance_ : Series, per covariate group, of the fitted prior sd of its coefficients
        (automatic relevance determination: ~0 for a group that does not predict effects,
        whose coefficients are then shrunk to 0 instead of costing variance).
    tau_grid_, tau_weights_ : the grid over tau and its posterior weights.
    kurtosis_ : moment estimate of the kurtosis of the effects around the prior mean (>= 1;
        3 for normal effects; NaN when ``tau_`` is 0), used by the robust intervals.
    loglik_ : marginal log-likelihood at the fit.  n_ : number of estimates.
    """

    def __init__(self, use_se: bool = False, interval: str = "robust", grid_size: int = 64):
        self.use_se = use_se
        self.interval = interval
        self.grid_size = grid_size

    # ------------------------------------------------------------------ fit
    def fit(self, estimates, ses, covariates, names=None, groups=None) -> "CovariatePrior":
        """Fit to estimates, their SEs and an ``(n, q)`` covariate matrix (no intercept).

        ``groups`` labels each column with the covariate it comes from (one-hot columns of
        one categorical share a label and a relevance); default: one group per column."""
        if not isinstance(self.use_se, (bool, np.bool_)):
            raise ValueError(f"use_se must be True or False, got {self.use_se!r}")
        if self.interval not in INTERVALS:
            raise ValueError(f"interval must be one of {list(INTERVALS)}, got {self.interval!r}")
        if int(self.grid_size) != self.grid_size or self.grid_size < 8:
            raise ValueError(f"grid_size must be an integer >= 8, got {self.grid_size!r}")
        x, s = _check_estimates(estimates, ses)
        covariates = self._check_covariates(covariates, x.size)
        names = list(names) if names is not None else [f"z{j}" for j in range(covariates.shape[1])]
        groups = list(groups) if groups is not None else names
        if len(groups) != covariates.shape[1]:
            raise ValueError("groups must give one label per covariate column")
        log_se = np.log(s)
        self._n_covariates = covariates.shape[1]
        # columns (and groups) in an order fixed by their values, not by their names or
        # the order given: the fit, its optimiser's path and the draws are then the same
        self._order = _canonical_order(covariates)
        self._log_se = (log_se.mean(), log_se.std()) if self.use_se and np.ptp(log_se) > 0 else None
        if self._log_se is not None:
            names, groups = names + ["log_se"], groups + ["log_se"]
        z = self._design(s, covariates)
        if x.size < z.shape[1] + 2:
            raise ValueError(f"{z.shape[1]} prior-mean coefficients need at least "
                             f"{z.shape[1] + 2} estimates, got {x.size}")
        if np.linalg.matrix_rank(z) < z.shape[1]:
            raise ValueError("covariate columns are collinear (with each other or the intercept)")
        self.names_, self.n_ = ["intercept"] + names, x.size
        groups = [str(groups[j]) for j in self._order] + groups[self._n_covariates:]
        labels = list(dict.fromkeys(groups))  # by first column, in the canonical order
        self._member = np.array([labels.index(g) for g in groups], dtype=int)
        tau, gamma, omega = self._fit_hyper(x, s, z, len(labels))
        self.tau_, self.spread_power_ = tau, gamma
        self.relevance_ = pd.Series(omega, index=labels, dtype=float).sort_index()
        self._precision = self._coef_precision(omega)
        self.loglik_, beta, gram = _marginal(x, s, z, tau**2 * self._shape(s), self._precision)
        self._beta, self._beta_cov = beta, np.linalg.inv(gram)
        # reported in the columns' given order (internal column i is given column given[i])
        given = np.r_[0, 1 + self._order, np.arange(1 + self._n_covariates, z.shape[1])]
        self.coef_ = pd.Series(_placed(beta, given), index=self.names_)
        self.coef_se_ = pd.Series(_placed(np.sqrt(np.diag(self._beta_cov)), given),
                                  index=self.names_)
        self.kurtosis_ = _kurtosis(x - z @ beta, s, tau**2 * self._shape(s))
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

    def _design(self, s, covariates):
        """Prior-mean design: intercept, covariates and (``use_se``) standardised log se."""
        covariates = self._check_covariates(covariates, s.size)
        if covariates.shape[1] != self._n_covariates:
            raise ValueError(f"covariates have {covariates.shape[1]} columns, the prior was "
                             f"fitted with {self._n_covariates}")
        columns = [np.ones((s.size, 1)), covariates[:, self._order]]
        if self._log_se is not None:
            columns.append(((np.log(s) - self._log_se[0]) / self._log_se[1])[:, None])
        return np.hstack(columns)

    def _shape(self, s, gamma=None):
        """Prior variance of each item relative to tau^2: ``(s / s_ref)^gamma``."""
        gamma = self.spread_power_ if gamma is None else gamma
        return np.exp(gamma * (np.log(s) - self._log_se[0])) if self._log_se else np.ones(s.size)

    def _coef_precision(self, omega):
        """Prior precision of each coefficient: 0 (flat) for the intercept."""
        return np.r_[0.0, 1.0 / np.asarray(omega)[self._member] ** 2]

    def _fit_hyper(self, x, s, z, n_groups):
        """Maximum marginal likelihood over tau^2 and the groups' omega^2, in variances
        (the likelihood is flat in log scales near 0, where L-BFGS stalls), from two starts:
        covariates on (omega = the intercept-only tau) and off (omega = 0)."""
        scale = np.std(x) + np.sqrt(np.mean(s**2)) + 1e-300
        n_spread = int(self._log_se is not None)

        def objective(u):  # u: tau^2 / scale^2, [gamma], omega^2 / scale^2
            gamma = u[1] if n_spread else 0.0
            omega2 = np.maximum(u[1 + n_spread:], FLOOR**2) * scale**2
            return -_marginal(x, s, z, u[0] * scale**2 * self._shape(s, gamma),
                              self._coef_precision(np.sqrt(omega2)))[0]

        tau0 = optimize.minimize_scalar(
            lambda t: -_marginal(x, s, z[:, :1], t**2, np.zeros(1))[0],
            bounds=(0.0, 2 * np.ptp(x) + 1e-12), method="bounded").x / scale
        bounds = ([(0.0, (2 * np.ptp(x) / scale) ** 2 + 1)] + [SPREAD_BOUNDS] * n_spread
                  + [(0.0, OMEGA_CAP**2)] * n_groups)
        best = min((optimize.minimize(objective, np.r_[tau0**2, [0.0] * n_spread,
                                                       np.full(n_groups, start)],
                                      method="L-BFGS-B", bounds=bounds)
                    for start in (tau0**2, 0.0)), key=lambda res: res.fun)
        tau = float(np.sqrt(best.x[0]) * scale)
        gamma = float(best.x[1]) if n_spread and tau > 0 else 0.0
        omega = np.sqrt(np.maximum(best.x[1 + n_spread:], FLOOR**2)) * scale
        return tau, gamma, omega

    def _fit_grid(self, x, s, z):
        """Grid over tau where the likelihood is not negligible (relevances held at their
        estimates), its weights, and the normal posterior of beta at each grid point."""
        shape = self._shape(s)
        fits = lambda grid: [_marginal(x, s, z, t**2 * shape, self._precision)  # noqa: E731
                             for t in grid]
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
        z = self._design(s, covariates)
        total = sum(part[0] for part in self._grid)
        shape = self._shape(s)
        out = []
        for weight, tau, beta, beta_cov in self._grid:
            pull = s**2 / (s**2 + tau**2 * shape)
            mean = x - pull * (x - z @ beta)
            var = (1 - pull) * s**2 + pull**2 * np.einsum("ij,jk,ik->i", z, beta_cov, z)
            out.append((weight / total, mean, var, pull, beta, beta_cov, z))
        return out

    def prior_mean(self, ses, covariates) -> np.ndarray:
        """Fitted prior mean ``z' beta`` of each item."""
        s = np.asarray(ses, dtype=float).ravel()
        return self._design(s, covariates) @ self._beta

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
        if self.interval == "robust":
            half = self._robust_half_width(s, covariates, alpha)
            low, high = mean - half, mean + half
        else:
            low = _mixture_quantile(w, m, sd, alpha / 2)
            high = _mixture_quantile(w, m, sd, 1 - alpha / 2)
        positive = special.ndtr(m / sd) @ w
        index = estimates.index if isinstance(estimates, pd.Series) else None
        return pd.DataFrame(dict(zip(_POSTERIOR_COLUMNS, [mean, total_sd, low, high, positive])),
                            index=index)

    def _robust_half_width(self, s, covariates, alpha):
        """AKP half-width at the fitted hyperparameters. The error of the shrunk estimate is
        noise, ``(1 - pull) (x - theta) - pull z'(beta_hat - beta)``, plus the bias
        ``pull (theta - z' beta)``, whose normalised second moment is ``m2``."""
        z = self._design(s, covariates)
        prior_var = self.tau_**2 * self._shape(s)
        pull = s**2 / (s**2 + prior_var)
        noise_sd = np.sqrt((1 - pull) ** 2 * s**2
                           + pull**2 * np.einsum("ij,jk,ik->i", z, self._beta_cov, z))
        m2 = pull**2 * prior_var / noise_sd**2
        kappa = self.kurtosis_ if np.isfinite(self.kurtosis_) else 3.0  # irrelevant: m2 = 0
        return robust_critical_values(m2, kappa, alpha) * noise_sd

    def sample(self, estimates, ses, covariates, n_draws: int = 1000, seed=0, uniforms=None,
               shared=None) -> np.ndarray:
        """Joint posterior draws, shape ``(n_estimates, n_draws)``: tau, then beta, are drawn
        per draw and shared by all items, so the draws carry the items' common uncertainty.
        ``uniforms`` (per item and draw) drive the items' own noise and ``shared``
        (``(1 + n_coefficients, n_draws)``: tau's grid point, then beta's normals) the common
        part, both in (0, 1) (default from ``seed``'s generator)."""
        x, s = _check_estimates(estimates, ses)
        rng = np.random.default_rng(seed)
        shared = _uniforms(shared, rng, (1 + len(self.names_), n_draws))
        uniforms = _uniforms(uniforms, rng, (x.size, n_draws))
        parts = self._components(x, s, covariates)
        w = np.cumsum([p[0] for p in parts])
        which = np.minimum(np.searchsorted(w / w[-1], shared[0], side="right"), len(parts) - 1)
        draws = np.empty((x.size, n_draws))
        for k in np.unique(which):
            _, _, _, pull, beta, beta_cov, z = parts[k]
            cols = np.flatnonzero(which == k)
            betas = beta[:, None] + np.linalg.cholesky(beta_cov) @ special.ndtri(shared[1:, cols])
            mean = x[:, None] - pull[:, None] * (x[:, None] - z @ betas)
            draws[:, cols] = mean + np.sqrt((1 - pull) * s**2)[:, None] * special.ndtri(
                uniforms[:, cols])
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
        return {"kind": "covariates", "n": int(self.n_),
                "tau": float(self.tau_), "spread_power": float(self.spread_power_),
                "coef": {k: float(v) for k, v in self.coef_.items()},
                "coef_se": {k: float(v) for k, v in self.coef_se_.items()},
                "relevance": {k: float(v) for k, v in self.relevance_.items()},
                "kurtosis": float(self.kurtosis_), "interval": self.interval,
                "loglik": float(self.loglik_)}


def _canonical_order(covariates) -> np.ndarray:
    """Order of the covariate columns by their values (lexicographic over the rows as given;
    ``rank_items`` gives them in item-key order): free of the columns' names and given order.
    Equal columns would be collinear, so the order is total for any usable design."""
    return np.lexsort(covariates[::-1]) if covariates.size else np.arange(covariates.shape[1])


def _placed(values, positions) -> np.ndarray:
    out = np.empty_like(values)
    out[positions] = values
    return out


def _marginal(x, s, z, prior_var, coef_precision):
    """Log-likelihood of ``x ~ N(z beta, s^2 + prior_var)`` with beta integrated out under
    ``N(0, diag(1 / coef_precision))`` (precision 0: flat, as in restricted ML), up to a
    constant; returns (loglik, posterior mean of beta, its precision ``z' D z + P``)."""
    precision = 1.0 / (s**2 + prior_var)
    gram = z.T @ (z * precision[:, None]) + np.diag(coef_precision)
    beta = np.linalg.solve(gram, z.T @ (precision * x))
    resid = x - z @ beta
    _, logdet = np.linalg.slogdet(gram)
    penalised = coef_precision > 0
    quad = precision @ resid**2 + coef_precision @ beta**2
    return (-0.5 * (np.sum(np.log(s**2 + prior_var)) + logdet
                    - np.sum(np.log(coef_precision[penalised])) + quad), beta, gram)


def _kurtosis(resid, s, prior_var):
    """Moment estimate of ``E eps^4 / (E eps^2)^2`` for ``eps = theta - z'beta``:
    ``E[e^4 - 6 s^2 e^2 + 3 s^4] = E eps^4`` for ``e = eps + noise``; items weighted by the
    inverse variance of that term, ``(s^2 + prior_var)^-4``, each scaled by its own prior
    variance. Floored at 1 (its minimum)."""
    if not np.all(prior_var > 0):
        return float("nan")
    weight = 1.0 / (s**2 + prior_var) ** KURTOSIS_POWER
    fourth = weight @ ((resid**4 - 6 * s**2 * resid**2 + 3 * s**4) / prior_var**2)
    return float(max(fourth / weight.sum(), 1.0))


def _mixture_quantile(w, m, sd, q, n_iter=60):
    """Quantile ``q`` of each row's normal mixture (weights w, means m, sds sd) by bisection."""
    low = np.min(m - 10 * sd, axis=1)
    high = np.max(m + 10 * sd, axis=1)
    for _ in range(n_iter):
        mid = 0.5 * (low + high)
        below = special.ndtr((mid[:, None] - m) / sd) @ w < q
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    return 0.5 * (low + high)
