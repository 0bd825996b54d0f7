"""Per-item balancing of cross-fitted propensities along confounder columns.

An item's AIPW error keeps the remainder mean[((1 - t) / (1 - e) - t / e) delta(x)], delta
the outcome models' error. Where delta lies along a few columns (in a recommender: a match
of user and item topics, the text components), weights that balance those columns between
the arms within the item remove it, whatever the outcome models missed. ``balance_propensity``
calibrates each item's propensity, logit e' = logit e + gamma_k' f (f: the columns centred
and scaled within the item), with gamma_k minimising the convex balancing loss

    sum_i t (1 - e') / e' + (1 - t) e' / (1 - e') + (1 - 2t) logit e'  +  penalty / 2 |gamma_k|^2

whose gradient is sum_i ((1 - t) / (1 - e') - t / e') f_i: at penalty 0 the arms'
inverse-propensity weighted sums of the centred columns agree (the covariate-balancing
propensity score's just-identified condition, Imai and Ratkovic 2014, without the
intercept). It uses the rows' treatments, not their outcomes, so the cross-fitted outcome
residuals stay independent of the weights. The ridge keeps small items from extreme
weights; where the columns are balanced already, gamma_k ~ 0 and nothing changes. No
intercept: the normalised AIPW rescales each arm's weights anyway, and balancing their
totals as well sent many tail items' propensities to the clip (measured: 153 of 663 items
lost their "ok" status, benchmarks/README.md session 7).

The estimators (local, and each Spark shard: an item's rows are never split) calibrate
every fitted propensity, whatever the nuisance, along the text components:
``text_balancing``.
"""
from __future__ import annotations

import numpy as np
import torch

MAX_STEP = 1.0  # largest change of any gamma per Newton step (logit units per within-item sd)


def _within_item_scaled(F, item, n_items):
    """Columns of F centred within each item and divided by their within-item sd (columns
    constant within an item are 0 there)."""
    count = np.maximum(np.bincount(item, minlength=n_items), 1)
    out = np.empty_like(F, dtype=np.float64)
    for j in range(F.shape[1]):
        column = F[:, j].astype(np.float64)
        centred = column - (np.bincount(item, column, n_items) / count)[item]
        sd = np.sqrt(np.bincount(item, centred * centred, n_items) / count)
        out[:, j] = centred / np.where(sd > 1e-12, sd, np.inf)[item]
    return out


def balance_propensity(e, t, item, F, *, n_items, penalty, max_iter=30, tol=1e-8):
    """(calibrated propensities, per-item gamma (n_items, columns)): see the module.

    ``e`` in (0, 1), ``t`` 0/1, ``item`` codes in [0, n_items), ``F`` (rows, columns): the
    columns to balance; ``penalty`` > 0: ridge on gamma (standardised columns).
    """
    e = np.clip(np.asarray(e, np.float64), 1e-12, 1 - 1e-12)
    t = np.asarray(t, np.float64)
    base = np.log(e) - np.log1p(-e)
    p = F.shape[1]
    gamma = np.zeros((n_items, p))
    if p == 0 or len(e) == 0:
        return e, gamma
    Fs = _within_item_scaled(F, item, n_items)
    varies = np.abs(Fs).max(0, initial=0) > 0  # item-level columns (e.g. item text): none
    if not varies.all():
        calibrated, gamma[:, varies] = balance_propensity(e, t, item, F[:, varies],
                                                          n_items=n_items, penalty=penalty,
                                                          max_iter=max_iter, tol=tol)
        return calibrated, gamma
    for _ in range(max_iter):
        eta = base + (Fs * gamma[item]).sum(1)
        a, b = t * np.exp(-eta), (1 - t) * np.exp(eta)  # t (1 - e') / e', (1 - t) e' / (1 - e')
        resid = b - a + 1 - 2 * t  # (1 - t) / (1 - e') - t / e'
        grad = np.stack([np.bincount(item, resid * Fs[:, j], n_items) for j in range(p)], 1)
        grad += penalty * gamma
        H = np.empty((n_items, p, p))
        w = a + b
        for i in range(p):
            for j in range(i, p):
                H[:, i, j] = H[:, j, i] = np.bincount(item, w * Fs[:, i] * Fs[:, j], n_items)
        H += penalty * np.eye(p)
        step = np.linalg.solve(H, grad[:, :, None])[..., 0]
        step *= np.minimum(1.0, MAX_STEP / np.maximum(np.abs(step).max(1, keepdims=True), 1e-300))
        gamma -= step
        if np.abs(step).max() < tol:
            break
    eta = base + (Fs * gamma[item]).sum(1)
    return 1.0 / (1.0 + np.exp(-eta)), gamma


def balance_fitted(e, t, item, F, *, n_items, penalty):
    """``balance_propensity`` for an estimator's fitted propensity ``e`` (a tensor, any
    device and dtype): (the calibrated propensity as a float64 tensor on e's device, per-item
    |gamma_k| (logit units per within-item sd), numpy)."""
    calibrated, gamma = balance_propensity(e.detach().cpu().numpy(), np.asarray(t), item, F,
                                           n_items=n_items, penalty=penalty)
    return (torch.as_tensor(calibrated, dtype=torch.float64, device=e.device),
            np.sqrt((gamma ** 2).sum(1)))


def text_balancing(spec, extra, rows=slice(None), *, penalty, method, fitted_propensity):
    """The estimators' balancing step as ``f(e, t, item, n_items=) -> (e, |gamma_k|)``, or
    None where it does not apply (no ``penalty``, no text components in the design, a logged
    propensity, or ``method="or"``, which uses no weights). ``extra``: the frame of the
    design's extra columns (``spec.extra``, in order: the text components) for the rows,
    ``rows``: those in use."""
    keep = [j for j, name in enumerate(spec.extra) if name in spec.columns]
    if penalty is None or not keep or not fitted_propensity or method == "or" or extra is None:
        return None
    F = extra.iloc[:, keep].to_numpy()[rows]
    return lambda e, t, item, n_items: balance_fitted(e, t, item, F, n_items=n_items,
                                                      penalty=penalty)
