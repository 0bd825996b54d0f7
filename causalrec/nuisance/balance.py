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
every fitted propensity, whatever the nuisance, along the text components (or chosen
numeric confounders): ``balancing_step``.
"""
from __future__ import annotations

import numpy as np
import torch

MAX_STEP = 1.0  # largest change of any gamma per Newton step (logit units per within-item sd)


class _ItemSums:
    """Per-item sums of row values for rows sorted by item (contiguous runs, summed by
    ``np.add.reduceat``: a few times faster than weighted ``np.bincount`` on many rows)."""

    def __init__(self, item_sorted, n_items):
        counts = np.bincount(item_sorted, minlength=n_items)
        self.present = np.flatnonzero(counts)
        self.starts = (np.cumsum(counts) - counts)[self.present]
        self.n_items = n_items

    def __call__(self, values):
        out = np.zeros(self.n_items)
        if len(values):
            out[self.present] = np.add.reduceat(values, self.starts)
        return out


def _within_item_scaled(F, item, sums):
    """Columns of F centred within each item and divided by their within-item sd (columns
    constant within an item are 0 there)."""
    count = np.maximum(sums(np.ones(len(item))), 1)
    out = np.empty_like(F, dtype=np.float64)
    for j in range(F.shape[1]):
        column = F[:, j].astype(np.float64)
        centred = column - (sums(column) / count)[item]
        sd = np.sqrt(sums(centred * centred) / count)
        out[:, j] = centred / np.where(sd > 1e-12, sd, np.inf)[item]
    return out


def balance_propensity(e, t, item, F, *, n_items, penalty, max_iter=30, tol=1e-8):
    """(calibrated propensities, per-item gamma (n_items, columns)): see the module.

    ``e`` in (0, 1), ``t`` 0/1, ``item`` codes in [0, n_items), ``F`` (rows, columns): the
    columns to balance; ``penalty`` > 0: ridge on gamma (standardised columns).
    """
    e = np.clip(np.asarray(e, np.float64), 1e-12, 1 - 1e-12)
    p = F.shape[1]
    if p == 0 or len(e) == 0:
        return e, np.zeros((n_items, p))
    order = np.argsort(item, kind="stable")  # rows grouped by item, in their order within it
    item = np.asarray(item)[order]
    calibrated, gamma = _balance_sorted(e[order], np.asarray(t, np.float64)[order], item,
                                        np.asarray(F)[order], _ItemSums(item, n_items),
                                        n_items, penalty, max_iter, tol)
    out = np.empty_like(calibrated)
    out[order] = calibrated
    return out, gamma


def _balance_sorted(e, t, item, F, sums, n_items, penalty, max_iter, tol):
    base = np.log(e) - np.log1p(-e)
    p = F.shape[1]
    gamma = np.zeros((n_items, p))
    Fs = _within_item_scaled(F, item, sums)
    varies = np.abs(Fs).max(0, initial=0) > 0  # item-level columns (e.g. item text): none
    if not varies.any():
        return e, gamma
    Fs = Fs[:, varies]
    q = Fs.shape[1]
    g = np.zeros((n_items, q))
    for _ in range(max_iter):
        eta = _linear(base, Fs, g, item)
        a, b = t * np.exp(-eta), (1 - t) * np.exp(eta)  # t (1 - e') / e', (1 - t) e' / (1 - e')
        resid = b - a + 1 - 2 * t  # (1 - t) / (1 - e') - t / e'
        grad = np.stack([sums(resid * Fs[:, j]) for j in range(q)], 1) + penalty * g
        H = np.empty((n_items, q, q))
        w = a + b
        for i in range(q):
            wi = w * Fs[:, i]
            for j in range(i, q):
                H[:, i, j] = H[:, j, i] = sums(wi * Fs[:, j])
        H += penalty * np.eye(q)
        step = np.linalg.solve(H, grad[:, :, None])[..., 0]
        step *= np.minimum(1.0, MAX_STEP / np.maximum(np.abs(step).max(1, keepdims=True), 1e-300))
        g -= step
        if np.abs(step).max() < tol:
            break
    gamma[:, varies] = g
    eta = _linear(base, Fs, g, item)
    return 1.0 / (1.0 + np.exp(-eta)), gamma


def _linear(base, Fs, gamma, item):
    """base + each row's F gamma_k, a column at a time (no (rows, columns) temporaries: the
    step runs on every fitted propensity, billions of rows included)."""
    eta = base.copy()
    for j in range(Fs.shape[1]):
        eta += Fs[:, j] * gamma[item, j]
    return eta


def balance_fitted(e, t, item, F, *, n_items, penalty):
    """``balance_propensity`` for an estimator's fitted propensity ``e`` (a tensor, any
    device and dtype): (the calibrated propensity as a float64 tensor on e's device, per-item
    |gamma_k| (logit units per within-item sd), numpy)."""
    calibrated, gamma = balance_propensity(e.detach().cpu().numpy(), np.asarray(t), item, F,
                                           n_items=n_items, penalty=penalty)
    return (torch.as_tensor(calibrated, dtype=torch.float64, device=e.device),
            np.sqrt((gamma ** 2).sum(1)))


def balancing_step(spec, data, extra, rows=slice(None), *, penalty, columns="text", method,
                   fitted_propensity):
    """The estimators' balancing step as ``f(e, t, item, n_items=) -> (e, |gamma_k|)``, or
    None where it does not apply (no ``penalty``, nothing to balance, a logged propensity,
    or ``method="or"``, which uses no weights).

    ``columns``: "text" (the design's text components and pair cosines) or names among the
    design's numeric confounders and text columns (a text column stands for its components).
    ``data``: a frame with the confounder columns, ``extra``: the frame of the design's extra
    columns (``spec.extra``, in order: the text components), both for the same rows;
    ``rows``: those in use.
    """
    names = balance_column_names(spec, columns)
    if penalty is None or not names or not fitted_propensity or method == "or":
        return None
    extra_at = {name: j for j, name in enumerate(spec.extra)}
    # each column's rows in use, then stacked: no whole-log (rows, columns) copy beside it
    F = np.column_stack([(extra.iloc[:, extra_at[n]].to_numpy() if n in extra_at
                          else data[n].to_numpy(np.float64))[rows] for n in names])
    return lambda e, t, item, n_items: balance_fitted(e, t, item, F, n_items=n_items,
                                                      penalty=penalty)


def balance_column_names(spec, columns) -> list:
    """The design columns the balancing step uses (see ``balancing_step``); a name that is
    neither a numeric confounder nor a text column of the design raises ValueError."""
    text = [name for name in spec.extra if name in spec.columns]  # components, pair cosines
    if isinstance(columns, str) and columns == "text":
        return text
    out = []
    for name in columns:
        of_text = [c for c in spec.extra if c.startswith(f"{name}_pc")
                   or (c.endswith("_cos") and name in c[:-4].split("~"))]
        if name in spec.confounders:
            out += [name] if name in spec.columns else []  # a dropped (constant) column: none
        elif of_text:
            out += [c for c in of_text if c in spec.columns]
        else:
            raise ValueError(f"balance_columns: {name!r} is not a numeric confounder or a text "
                             f"column of the design ({spec.confounders} or text)")
    return list(dict.fromkeys(out))
