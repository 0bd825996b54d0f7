"""Priors on the factorised learner's item factors: method-of-moments variances (Gaussian
prior) and the discrete "atoms" prior (items share a few taste directions).

All on the factors' prior scale: the linear predictor for the logistic family, the
squared-error loss divided by the noise variance ``unit`` for the Gaussian family.
"""
from __future__ import annotations

import numpy as np

MIN_INFO = 20.0  # items informing the moment estimates (init_shrinkage 1: shrunk < 5%)
PENALTY_RANGE = (0.3, 1000.0)  # prior sd between 1.8 and 0.03
ATOM_RELIABILITY = 0.5  # atoms: items whose factors' noise variance is at most the prior's
MIN_ATOMS = 10
EM_STEPS = 100


def moment_penalties(deviations, info, X, W, unit):
    """(1 / tau^2, 1 / sigma_x^2) of the factor-analytic prior on item slope deviations,
    Cov(d_k) = W T W' + sigma_x^2 I (whitened directions, tau^2 per direction), by the
    method of moments from the initial fit's deviations of the items with information at
    least ``MIN_INFO``: u_k = W' Cov(x) d_k has noise ~ unit / info_k per direction, the part
    of d_k outside W's span the same per remaining column; noise subtracted, clipped to
    ``PENALTY_RANGE`` (no shared structure: tau^2 ~ 0, the factors stay at ~0)."""
    big = info >= MIN_INFO
    d, r = W.shape
    if not big.any():
        return PENALTY_RANGE[1], PENALTY_RANGE[1]
    S = np.cov(X, rowvar=False).reshape(d, d)
    D = deviations[big]
    U = D @ S @ W
    noise = unit / info[big]
    tau2 = float(np.mean((U ** 2).mean(1) - noise))
    outside = ((np.einsum("kd,de,ke->k", D, S, D) - (U ** 2).sum(1)) / (d - r)
               if d > r else np.zeros(len(D)))
    sigma2 = float(np.mean(outside - noise)) if d > r else 0.0
    return tuple(float(np.clip(1.0 / max(v, 1e-12), *PENALTY_RANGE)) for v in (tau2, sigma2))


def item_curvature(Z, y, eta, item, n_items, family, unit):
    """Per item: the log-likelihood's score s_k and curvature H_k in the factors at ``eta``,
    with the item intercept profiled out (z centred within the item, weighted)."""
    if family == "logistic":
        mean = 1.0 / (1.0 + np.exp(-eta))
        w, resid = mean * (1.0 - mean), y - mean
    else:
        w, resid = np.full(len(eta), 1.0 / unit), (y - eta) / unit
    r = Z.shape[1]
    score = np.stack([np.bincount(item, resid * Z[:, j], n_items) for j in range(r)], 1)
    total = np.maximum(np.bincount(item, w, n_items), 1e-12)
    zbar = np.stack([np.bincount(item, w * Z[:, j], n_items) for j in range(r)], 1)
    Zc = Z - (zbar / total[:, None])[item]
    H = np.zeros((n_items, r, r))
    for a in range(r):
        for b in range(a, r):
            H[:, a, b] = H[:, b, a] = np.bincount(item, w * Zc[:, a] * Zc[:, b], n_items)
    return score, H


def atom_posterior(V, prior_mean, score, H, penalty):
    """Posterior means of the item factors under a discrete prior, or None.

    The atoms are the deviations from the prior mean (g + A c_k) of the items whose factors
    are measured at least as precisely as the Gaussian prior's spread 1 / penalty (their
    maximum-likelihood factors, one Newton step from ``V``); the atoms' weights by EM over
    all items (an NPMLE on that support). Each item's likelihood is its quadratic expansion
    at ``V`` (score, curvature): a small item is pulled toward the large items whose
    directions its rows resemble, not toward zero. None where fewer than ``MIN_ATOMS`` (or
    2 r) items qualify, e.g. without shared structure (tau^2 ~ 0): the Gaussian fit stays.
    """
    r = V.shape[1]
    info = np.trace(H, axis1=1, axis2=2) / r
    atoms = np.flatnonzero(info / penalty >= ATOM_RELIABILITY / (1 - ATOM_RELIABILITY))
    if len(atoms) < max(MIN_ATOMS, 2 * r):
        return None
    mle = V[atoms] + np.linalg.solve(H[atoms] + 1e-9 * np.eye(r), score[atoms][:, :, None])[..., 0]
    dev = mle - prior_mean[atoms]
    step = prior_mean[:, None, :] + dev[None, :, :] - V[:, None, :]  # item k under atom j
    loglik = np.einsum("kr,kjr->kj", score, step) - 0.5 * np.einsum("kjr,krs,kjs->kj",
                                                                      step, H, step)
    weights = np.full(len(atoms), 1.0 / len(atoms))
    for _ in range(EM_STEPS):
        post = loglik + np.log(np.maximum(weights, 1e-300))
        post = np.exp(post - post.max(1, keepdims=True))
        post /= post.sum(1, keepdims=True)
        weights = post.mean(0)
    return prior_mean + post @ dev


def refit_intercepts(b, base, y, item, n_items, family, steps=8):
    """Item intercepts for a fixed rest of the linear predictor ``base`` (Newton per item;
    one closed-form step for squared error)."""
    b = b.copy()
    for _ in range(steps if family == "logistic" else 1):
        eta = base + b[item]
        if family == "logistic":
            mean = 1.0 / (1.0 + np.exp(-eta))
            w = np.bincount(item, mean * (1 - mean), n_items)
        else:
            mean, w = eta, np.bincount(item, minlength=n_items).astype(float)
        b += np.bincount(item, y - mean, n_items) / np.maximum(w, 1e-12)
    return b
