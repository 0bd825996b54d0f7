"""Second stage of the DR-learner: pooled ridge regressions of pseudo-outcomes on user
features, one per item, solved for all items at once.

Item k's effect is ``tau_k(z) = a_k + (z - m_k)' (beta + b_k)`` with z the standardised user
features, m_k their mean over the item's rows, a_k the item's mean pseudo-outcome (its
average effect), beta slopes shared by all items with ridge ``shared`` and b_k the item's
deviation with ridge ``local`` (both inf: the per-item ATE, no heterogeneity). Everything
comes from per-(fold, item) moments of [1, z] and the pseudo-outcome, accumulated in one
blocked pass of the engine (``glm.segment_moments``): refits for other penalties or other folds, and the
held-out losses that choose the penalties, never touch the rows again.

Covariances are sandwich (heteroskedasticity-robust) covariances of the ridge estimator at
its penalty, including the shared slopes' share: intervals cover the shrunk effect.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..glm import segment_moments
from ..glm.linalg import spd_inverse

__all__ = ["Moments", "RidgeFit", "cell_moments", "fit_ridge", "heldout_loss", "meat",
           "covariance", "select_penalties"]

INF = float("inf")
# penalties in units of the pseudo-outcomes' variance (ridge = noise variance / prior slope
# variance), from nearly free slopes to none; inf = slopes fixed at zero
LOCAL_GRID = tuple(10.0 ** np.arange(-1, 7)) + (INF,)
SHARED_GRID = tuple(10.0 ** np.arange(-2, 6)) + (INF,)
# ridge on item means toward the mean over items (0: each item's own mean pseudo-outcome)
MEAN_GRID = (0.0,) + tuple(10.0 ** np.arange(1, 6))


@dataclass
class Moments:
    """Per cell: H = X'X, b = X'g, q = g'g for X = [1, z] (cells: (fold, item) or items)."""

    H: torch.Tensor  # (..., K, p, p)
    b: torch.Tensor  # (..., K, p)
    q: torch.Tensor  # (..., K)


@dataclass
class RidgeFit:
    coef: torch.Tensor  # (K, p): tau_k(z) = [1, z] . coef_k
    n: torch.Tensor     # (K,) rows per item
    m: torch.Tensor     # (K, d) feature means per item
    P: torch.Tensor     # (K, d, d) (G_k + local I)^-1
    Q: torch.Tensor     # (K, d, d) local * P_k
    M_inv: torch.Tensor  # (d, d) inverse Schur complement of the shared slopes (0: none)
    local: float
    shared: float
    mean: float


def _blocked_grams(Z, values, weight, cell, n_cells, device):
    """Per cell [1, z]' W [1, z], [1, z]' W values and values' W values (the engine's pass)."""
    Zt = torch.as_tensor(Z, dtype=torch.float64, device=device)
    return segment_moments(Zt, values, weight, cell, n_cells)


def cell_moments(Z, g, item, fold, n_items, n_folds, device) -> Moments:
    """Moments per (fold, item): shape (n_folds, n_items, ...)."""
    H, b, q = _blocked_grams(Z, g, np.ones(len(g)), fold * n_items + item, n_folds * n_items,
                             device)
    p = H.shape[-1]
    return Moments(H.view(n_folds, n_items, p, p), b.view(n_folds, n_items, p),
                   q.view(n_folds, n_items))


def meat(Z, residual, item, n_items, device) -> torch.Tensor:
    """Per item sum of r^2 [1, z][1, z]' (the sandwich's middle)."""
    return _blocked_grams(Z, np.zeros(len(residual)), residual ** 2, item, n_items, device)[0]


def _centred(H, b):
    n = H[:, 0, 0]
    safe = n.clamp(min=1.0)
    m = H[:, 0, 1:] / safe[:, None]
    G = H[:, 1:, 1:] - safe[:, None, None] * m[:, :, None] * m[:, None, :]
    c = b[:, 1:] - m * b[:, :1]
    return n, m, G, c, b[:, 0] / safe


def _local_factors(G, local):
    d = G.shape[-1]
    eye = torch.eye(d, dtype=G.dtype, device=G.device).expand_as(G)
    if local == INF:
        return torch.zeros_like(G), eye.clone()
    if local == 0:  # free item slopes: plain least squares per item
        return spd_inverse(G.contiguous()), torch.zeros_like(G)
    # Q = local (G + local I)^-1 = (G / local + I)^-1: stable for any penalty
    Q = spd_inverse((G / local + eye).contiguous())
    return Q / local, Q


def fit_ridge(mom: Moments, local: float, shared: float, mean: float = 0.0,
              factors=None) -> RidgeFit:
    """Pooled ridge from aggregated moments (K, p, p); ``factors`` = (n, m, G, c, gbar, P, Q)
    reused across shared penalties."""
    if factors is None:
        base = _centred(mom.H, mom.b)
        factors = (*base, *_local_factors(base[2], local))
    n, m, G, c, gbar, P, Q = factors
    d = G.shape[-1]
    if shared == INF:
        M_inv = G.new_zeros(d, d)
        beta = G.new_zeros(d)
    else:
        # eliminating b_k: (sum_k G_k Q_k + shared I) beta = sum_k Q_k c_k
        M = torch.bmm(G, Q).sum(0) + shared * torch.eye(d, dtype=G.dtype, device=G.device)
        M_inv = torch.linalg.inv(0.5 * (M + M.T))
        beta = M_inv @ torch.bmm(Q, c.unsqueeze(-1)).sum(0).squeeze(-1)
    slope = (torch.bmm(P, c.unsqueeze(-1)) + torch.bmm(Q, beta.expand_as(c).unsqueeze(-1))).squeeze(-1)
    coef = torch.cat([(_item_means(n, gbar, mean) - (m * slope).sum(1)).unsqueeze(1), slope], dim=1)
    return RidgeFit(coef, n, m, P, Q, M_inv, local, shared, mean)


def _item_means(n, gbar, mean):
    """Item means of the pseudo-outcomes, shrunk toward the mean over items by ridge ``mean``."""
    grand = (n * gbar).sum() / n.sum().clamp(min=1.0)
    return (n * gbar + mean * grand) / (n + mean) if mean > 0 else torch.where(n > 0, gbar, grand)


def heldout_loss(coef, mom: Moments) -> torch.Tensor:
    """Per item sum over the moments' rows of (g - [1, z] . coef)^2."""
    Hc = torch.bmm(mom.H, coef.unsqueeze(-1)).squeeze(-1)
    return mom.q - 2 * (coef * mom.b).sum(1) + (coef * Hc).sum(1)


def select_penalties(cells: Moments, scale: float, mean_grid=MEAN_GRID, local_grid=LOCAL_GRID,
                     shared_grid=SHARED_GRID):
    """Held-out DR loss (summed over folds, fits on the other folds) for every triple of
    penalties (in units of ``scale``); returns a list of (mean, local, shared, loss)."""
    F = cells.H.shape[0]
    total = {}
    for f in range(F):
        train = [j for j in range(F) if j != f] if F > 1 else [f]
        agg = Moments(cells.H[train].sum(0), cells.b[train].sum(0), cells.q[train].sum(0))
        test = Moments(cells.H[f], cells.b[f], cells.q[f])
        base = _centred(agg.H, agg.b)
        for local in local_grid:
            factors = (*base, *_local_factors(base[2], local * scale))
            for shared in shared_grid:
                fit = fit_ridge(agg, local * scale, shared * scale, 0.0, factors)
                for mean in mean_grid:  # only the intercepts move with the mean penalty
                    coef = fit.coef.clone()
                    coef[:, 0] += _item_means(base[0], base[4], mean * scale) - _item_means(base[0], base[4], 0.0)
                    loss = float(heldout_loss(coef, test).sum())
                    key = (mean, local, shared)
                    total[key] = total.get(key, 0.0) + loss
    return [(*key, loss) for key, loss in total.items()]


def covariance(fit: RidgeFit, B: torch.Tensor) -> torch.Tensor:
    """Sandwich covariance (K, p, p) of each item's coefficients ``coef`` ([1, z] scale).

    In centred coordinates (a_k, slope_k), a_k = mean pseudo-outcome and slope_k = P_k c_k +
    Q_k beta with beta = M^-1 sum_j Q_j c_j: the item's own rows enter through both terms.
    """
    K, p = fit.coef.shape
    d = p - 1
    eye = torch.eye(p, dtype=B.dtype, device=B.device)
    D = eye.repeat(K, 1, 1)
    D[:, 1:, 0] = -fit.m  # [1, z - m] = D [1, z]
    Bc = D @ B @ D.mT
    L = torch.zeros(K, p, p, dtype=B.dtype, device=B.device)
    L[:, 0, 0] = 1.0 / (fit.n + fit.mean).clamp(min=1.0)
    L[:, 1:, 1:] = fit.P
    J = torch.zeros(K, p, d, dtype=B.dtype, device=B.device)
    J[:, 1:, :] = fit.Q  # beta's loading on (a_k, slope_k)
    cov = L @ Bc @ L.mT
    if bool(fit.M_inv.abs().sum() > 0):
        var_u = (J.mT @ Bc @ J).sum(0)
        V_beta = fit.M_inv @ var_u @ fit.M_inv
        cross = L @ Bc @ J @ fit.M_inv @ J.mT
        cov = cov + J @ V_beta @ J.mT + cross + cross.mT
    T = eye.repeat(K, 1, 1)
    T[:, 0, 1:] = -fit.m  # coef = T (a, slope)
    return T @ cov @ T.mT
