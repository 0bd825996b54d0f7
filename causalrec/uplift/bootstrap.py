"""Per-item test that the effect does not vary with the user features: a bootstrap Bartlett
correction (the statistic rescaled so that its studentised pairs-bootstrap mean equals its
degrees of freedom, then a chi-square reference) of the Wald statistic of an unpenalised per-item regression of the
pseudo-outcomes on [1, z], batched over items and draws with the engine's moments.

Why a bootstrap: items have few treated rows (median ~25 on simulated logs) and the
pseudo-outcome's error (mu_hat - mu)(1 - t/e) is skewed and grows with |z|, so the Wald
statistic is far from its F (or chi-square) reference and rejected 0.11-0.14 under no
heterogeneity (HC0 or HC3 sandwiches, an R-learner variant alike). Resampling whole rows
keeps each row's (z, t, y, nuisance error) together, so the skewness is reproduced; a wild
bootstrap (which breaks it) or redrawing t from the propensity with the fitted outcome
models as truth rejected ~0.22. Poisson(1) row weights make draws independent per row,
so all items' draws are cells of one moments pass; each weight is a counter-based draw of
(seed, row key, draw) (``poisson_weights``), so the rows' blocks (Spark partitions) need no
shared random stream and give the pandas fit's draws. The rescaled chi-square gives p-values
below 1 / n_draws (Benjamini-Hochberg over many items needs them) and rejected 0.034 under
no heterogeneity (1062 simulated items; bootstrap tail counts 0.022, with less power).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from ..glm import segment_moments
from ..glm.layout import chunk_bytes

__all__ = ["wald_bootstrap"]


# singular values below this fraction of the largest are zero: a draw whose design lacks a
# direction (a level absent from the resampled rows) then has the same rank whatever the
# summation order of its sums (the default, ~n * eps, lets rounding decide the rank)
RANK_RTOL = 1e-10


def _wald(H, b, M, centre=None):
    """Slopes of the least-squares fits pinv(H) b, their HC0 sandwich V = H^-1 M H^-1 and the
    Wald statistic of (slopes - centre); returns (slopes, wald, rank of V)."""
    H_inv = torch.linalg.pinv(H, rtol=RANK_RTOL, hermitian=True)
    slope = (H_inv @ b.unsqueeze(-1)).squeeze(-1)[..., 1:]
    V = (H_inv @ M @ H_inv)[..., 1:, 1:]
    dev = slope if centre is None else slope - centre
    wald = (dev.unsqueeze(-2) @ torch.linalg.pinv(V, rtol=RANK_RTOL, hermitian=True) @ dev.unsqueeze(-1)).flatten(-3)
    return slope, wald, V


def _moments(blk, weight, cell, n_cells, device, coef=None):
    """Per cell weighted moments H, b of [1, z] and g; with ``coef`` the residual meat M."""
    Zt = torch.as_tensor(blk.Z, dtype=torch.float64, device=device)
    gt = torch.as_tensor(blk.g, dtype=torch.float64, device=device)
    w = torch.as_tensor(weight, dtype=torch.float64, device=device)
    reps = len(w) // max(len(gt), 1)
    Zt, gt = Zt.repeat(reps, 1), gt.repeat(reps)
    cell = torch.as_tensor(cell, device=device)
    if coef is None:
        H, b, _ = segment_moments(Zt, gt, w, cell, n_cells)
        return H, b
    coef = coef.to(device)
    residual = gt - coef[cell, 0] - (coef[cell, 1:] * Zt).sum(1)
    return (segment_moments(Zt, torch.zeros_like(gt), w * residual ** 2, cell, n_cells)[0],)


def _fit(rows, cells, n_cells, device):
    """Per cell least squares of g on [1, z] with row weights, summed over the rows' blocks:
    moments, then (a second pass at the cells' coefficients) the residual meat."""
    at = rows.device  # where the blocks' sums are made (no backend in the closures)
    H, b = (torch.as_tensor(v).to(device) for v in rows.reduce(
        lambda blk: _moments(blk, *cells(blk), n_cells, at)))
    coef = (torch.linalg.pinv(H, rtol=RANK_RTOL, hermitian=True) @ b.unsqueeze(-1)).squeeze(-1)
    coef_rows = coef.to(at)
    (M,) = (torch.as_tensor(v).to(device) for v in rows.reduce(
        lambda blk: _moments(blk, *cells(blk), n_cells, at, coef_rows)))
    return H, b, M


_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(_GOLDEN)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_MIX1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(_MIX2)
    return x ^ (x >> np.uint64(31))


_POISSON1_CDF = stats.poisson.cdf(np.arange(40), 1.0)


def poisson_weights(seed: int, keys: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Poisson(1) weights (len(draws), len(keys)): a counter-based draw of (seed, row key,
    draw), so that a row gets the same weights wherever it lives (any block, partition or
    order) and the pandas and Spark fits resample alike."""
    with np.errstate(over="ignore"):
        row = _splitmix(np.uint64(int(seed) & (2 ** 64 - 1)) ^ _splitmix(
            np.asarray(keys, dtype=np.int64).astype(np.uint64)))
        x = _splitmix(row[None, :] + _splitmix(np.asarray(draws, dtype=np.uint64))[:, None])
    u = (x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.float64)


def wald_bootstrap(rows, n_items: int, n_draws: int, seed: int, device):
    """Per item: observed Wald statistic W, its degrees of freedom d and the p-value
    chi2_d.sf(W d / mean W*), W* the draws' statistics centred at the observed slopes;
    ``rows`` an uplift rows backend (``causalrec.uplift.rows``)."""
    observed = lambda blk: (np.ones(len(blk.g)), blk.item)
    H, b, M = _fit(rows, observed, n_items, device)
    slope, wald, V = _wald(H, b, M)
    df = torch.linalg.matrix_rank(V, rtol=RANK_RTOL, hermitian=True).to(torch.float64)
    total = torch.zeros(n_items, dtype=torch.float64, device=device)
    finite = torch.zeros_like(total)
    n, p = max(1, int(round(float(H[:, 0, 0].sum())))), H.shape[-1]
    # draws per pass: the stacked rows (n x draws) within the engine's chunk budget
    step = int(max(1, min(n_draws, chunk_bytes(torch.device(device)) // max(1, 8 * n * (p + 3)))))
    for start in range(0, n_draws, step):
        B = min(step, n_draws - start)

        def cells(blk, start=start, B=B):  # cell (item, draw); weights of (seed, row, draw)
            weight = poisson_weights(seed, blk.key, np.arange(start, start + B))
            draw = np.repeat(np.arange(B), len(blk.g))
            return weight.reshape(-1), np.tile(blk.item, B) * B + draw

        H, b, M = _fit(rows, cells, n_items * B, device)
        _, star, _ = _wald(H.view(n_items, B, p, p), b.view(n_items, B, p),
                           M.view(n_items, B, p, p), slope.unsqueeze(1))
        ok = torch.isfinite(star)
        total += torch.where(ok, star, 0.0).sum(1)
        finite += ok.sum(1)
    wald, df = wald.cpu().numpy(), df.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = df / (total / finite).cpu().numpy()
        p_value = stats.chi2.sf(wald * scale, np.maximum(df, 1))
    return wald, df, np.where(np.isfinite(scale) & (df > 0), p_value, np.nan)
