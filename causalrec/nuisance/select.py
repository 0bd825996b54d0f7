"""Choosing between nuisance predictions by out-of-fold loss, and propensity calibration."""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["row_loss", "choose_per_item", "choose_model", "clear_winner", "stack_weights",
           "calibration_table"]

STACK_GRID = np.linspace(0.0, 1.0, 21)
_EPS = 1e-6  # keeps the log loss finite for predictions at 0 or 1 (scoring only)


def row_loss(pred: np.ndarray, target: np.ndarray, family: str) -> np.ndarray:
    """Per-row loss: log loss for 0/1 targets ("logistic"), squared error otherwise."""
    if family == "logistic":
        p = np.clip(pred, _EPS, 1 - _EPS)
        return -(target * np.log(p) + (1 - target) * np.log1p(-p))
    return (target - pred) ** 2


def choose_per_item(loss_pooled, loss_own, item, n_items) -> np.ndarray:
    """Per item, True where its own model has the smaller summed out-of-fold loss (rows with
    NaN own loss, i.e. items without a model of their own, never choose it)."""
    has_own = np.bincount(item, weights=np.isfinite(loss_own), minlength=n_items) > 0
    own = np.bincount(item, weights=np.nan_to_num(loss_own, nan=0.0), minlength=n_items)
    pooled = np.bincount(item, weights=np.where(np.isfinite(loss_own), loss_pooled, 0.0),
                         minlength=n_items)
    return has_own & (own < pooled)


def choose_model(losses, item, n_items) -> np.ndarray:
    """Per item, the index of the candidate with the smallest summed out-of-fold loss over
    the item's scored rows (``losses``: one per-row array per candidate, NaN on the rows of
    items the candidate has no prediction for; such a candidate is not chosen for the
    item). Ties keep the earlier candidate; the first must be finite everywhere."""
    totals = np.full((len(losses), n_items), np.inf)
    for k, loss in enumerate(losses):
        finite = np.isfinite(loss)
        complete = np.bincount(item, weights=~finite, minlength=n_items) == 0
        total = np.bincount(item, weights=np.where(finite, loss, 0.0), minlength=n_items)
        totals[k] = np.where(complete, total, np.inf)
    return np.argmin(totals, axis=0)


def clear_winner(chosen, losses, item, n_items, challenger, z=2.0) -> np.ndarray:
    """``chosen`` (``choose_model``'s indices) with the ``challenger`` candidate kept only
    where it beats the best other candidate clearly: the item's summed loss difference over
    its scored rows at least ``z`` standard errors (paired, per row). Elsewhere the best other
    candidate stands: a near tie is noise, and the challenger is the less structured model."""
    won = chosen == challenger
    if not won.any():
        return chosen
    others = [k for k in range(len(losses)) if k != challenger]
    runner_up = np.asarray(others)[choose_model([losses[k] for k in others], item, n_items)]
    rows = np.flatnonzero(won[item])
    gap = (np.stack([loss[rows] for loss in losses])[runner_up[item[rows]], np.arange(len(rows))]
           - losses[challenger][rows])
    total = np.bincount(item[rows], weights=gap, minlength=n_items)
    count = np.bincount(item[rows], minlength=n_items)
    square = np.bincount(item[rows], weights=gap ** 2, minlength=n_items)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.sqrt(np.maximum(square - total ** 2 / count, 0.0))  # sd * sqrt(n)
        clear = total > z * spread
    return np.where(won & ~clear, runner_up, chosen)


def stack_weights(glm, candidates, target, family) -> tuple[np.ndarray, float]:
    """Convex weights (w_1..w_m) of ``(1 - sum w) * glm + sum w_j * candidates[j]`` minimising
    the mean out-of-fold loss over the simplex grid of step 0.05 (m parameters fitted on n
    out-of-fold rows: no refit needed); ties keep the earlier point (the GLM first).
    Returns (weights, their loss)."""
    steps = len(STACK_GRID) - 1
    grid = [np.array(c) / steps for c in _compositions(steps, len(candidates))]
    best, best_loss = None, np.inf
    for w in grid:
        pred = (1 - w.sum()) * glm + sum(wj * c for wj, c in zip(w, candidates))
        loss = float(row_loss(pred, target, family).mean())
        if loss < best_loss:
            best, best_loss = w, loss
    return best, best_loss


def _compositions(total, parts):
    """Non-negative integer vectors of length ``parts`` with sum <= ``total``, the zero
    vector first (lexicographic)."""
    if parts == 0:
        yield ()
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def calibration_table(propensity, treatment, n_bins: int = 10) -> pd.DataFrame:
    """Binned calibration of fitted propensities: per equal-width bin of the propensity, the
    rows, the mean fitted propensity, the observed treated share and its binomial standard
    error, and ``z`` = (share - mean) / se (|z| above ~3 flags miscalibration)."""
    e = np.asarray(propensity, dtype=np.float64)
    t = np.asarray(treatment, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, e, side="right") - 1, 0, n_bins - 1)
    n = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(b, weights=e, minlength=n_bins) / n
        share = np.bincount(b, weights=t, minlength=n_bins) / n
        se = np.sqrt(np.clip(mean * (1 - mean), 1e-12, None) / n)
        z = (share - mean) / se
    return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "n": n,
                         "mean_propensity": mean, "treated_share": share, "se": se, "z": z})
