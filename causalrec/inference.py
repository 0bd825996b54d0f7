"""One place for the package's frequentist arithmetic: critical values, intervals, p-values,
Benjamini-Hochberg q-values and the standard error of a mean.

Intervals and p-values use Student t when degrees of freedom are given (finite, >= 1) and the
normal distribution otherwise; every interval causalrec reports comes from here.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from .utils.validation import Interval

__all__ = ["critical_value", "interval", "p_value", "benjamini_hochberg", "mean_and_se"]


_ALPHA = Interval(0, 1, "neither")


def critical_value(alpha: float, dof=None):
    """Two-sided critical value at level 1 - alpha: t with ``dof`` degrees of freedom (an
    array broadcasts; NaN or None dof means normal), else the normal quantile."""
    # every interval's alpha passes here: 1.5 would swap the limits, 0 make them infinite
    if not _ALPHA.is_satisfied_by(alpha):
        raise ValueError(f"alpha must be {_ALPHA}, got {alpha!r}")
    if dof is None:
        return float(stats.norm.ppf(1 - alpha / 2))
    dof = np.asarray(dof, dtype=float)
    normal = ~np.isfinite(dof)
    value = stats.t.ppf(1 - alpha / 2, np.where(normal, 1.0, dof))
    return np.where(normal, stats.norm.ppf(1 - alpha / 2), value)


def interval(estimate, se, alpha: float, dof=None):
    """(low, high) of the two-sided interval estimate -/+ critical_value * se."""
    z = critical_value(alpha, dof)
    return estimate - z * se, estimate + z * se


def p_value(estimate, se, dof=None):
    """Two-sided p-value of estimate / se against t(dof) or the normal (0 / 0 gives NaN)."""
    estimate, se = np.asarray(estimate, dtype=float), np.asarray(se, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(estimate / se)
        if dof is None:
            out = 2 * stats.norm.sf(z)
        else:
            dof = np.asarray(dof, dtype=float)
            normal = ~np.isfinite(dof)
            out = np.where(normal, 2 * stats.norm.sf(z), 2 * stats.t.sf(z, np.where(normal, 1.0, dof)))
    return float(out) if out.ndim == 0 else out


def benjamini_hochberg(p_values, mask=None) -> np.ndarray:
    """Benjamini-Hochberg q-values over the finite p-values (where ``mask`` holds); NaN
    elsewhere."""
    p = np.asarray(p_values, dtype=float)
    use = np.isfinite(p) if mask is None else (np.asarray(mask, dtype=bool) & np.isfinite(p))
    q = np.full(p.shape, np.nan)
    if use.any():
        q[use] = stats.false_discovery_control(p[use])
    return q


def mean_and_se(values) -> tuple[float, float]:
    """Mean and its standard error (sample variance with n - 1) of a 1-d array."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        return np.nan, np.nan
    mean = float(values.mean())
    if n == 1:
        return mean, np.nan
    return mean, float(values.std(ddof=1) / np.sqrt(n))
