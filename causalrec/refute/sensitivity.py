"""Sensitivity of an effect to hidden confounding: robustness values (Cinelli & Hazlett
2020) and E-values (VanderWeele & Ding 2017) per item."""
from __future__ import annotations

import numpy as np
import pandas as pd
from ..inference import critical_value

__all__ = ["sensitivity", "robustness_value", "e_value"]


def robustness_value(t, dof, q: float = 1.0, alpha: float | None = None) -> np.ndarray:
    """Robustness value of Cinelli & Hazlett (2020) from t-statistics and degrees of freedom.

    With the partial Cohen's f of the treatment, ``f_q = q |t| / sqrt(dof)``:

    * ``alpha=None``: ``RV_q = 0.5 * (sqrt(f_q^4 + 4 f_q^2) - f_q^2)``, the partial R^2 a
      hidden confounder must have with both treatment and outcome (each, given the
      observed confounders) to reduce the estimate by ``100 q %``.
    * ``alpha``: ``RV_{q,alpha}``, the strength that moves the ``1 - alpha`` interval to
      include ``(1 - q)`` times the estimate: with ``f* = t_{1-alpha/2, dof-1} / sqrt(dof-1)``
      and ``f_qa = f_q - f*``, ``RV = 0`` if ``f_qa <= 0``, else
      ``0.5 * (sqrt(f_qa^4 + 4 f_qa^2) - f_qa^2)``; when ``f_q > 1 / f*`` the worst
      confounder explains all residual outcome variance instead and
      ``RV = (f_q^2 - f*^2) / (1 + f_q^2)``.

    Derived for OLS; for other estimators (AIPW) it is the usual t-statistic approximation.
    """
    t, dof = np.asarray(t, dtype=float), np.asarray(dof, dtype=float)
    f_q = q * np.abs(t) / np.sqrt(dof)
    with np.errstate(invalid="ignore", divide="ignore"):
        f_crit = (np.zeros_like(f_q) if alpha is None
                  else critical_value(alpha, dof - 1) / np.sqrt(dof - 1))
        f_qa = np.maximum(f_q - f_crit, 0.0)
        rv = 0.5 * (np.sqrt(f_qa ** 4 + 4 * f_qa ** 2) - f_qa ** 2)
        extreme = f_q * f_crit > 1
        rv = np.where(extreme, (f_q ** 2 - f_crit ** 2) / (1 + f_q ** 2), rv)
    return np.where(np.isfinite(f_q) & np.isfinite(f_crit), rv, np.nan)


def e_value(risk_ratio) -> np.ndarray:
    """E-value of a risk ratio (VanderWeele & Ding 2017): ``RR + sqrt(RR (RR - 1))`` after
    inverting ratios below 1; the risk ratio a hidden confounder needs with both treatment
    and outcome to explain the association away. 1 means no confounding is needed."""
    rr = np.asarray(risk_ratio, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rr = np.where(rr < 1, 1 / rr, rr)
        return rr + np.sqrt(rr * (rr - 1))


def sensitivity(effects: pd.DataFrame, q: float = 1.0, alpha: float = 0.05, dof=None,
                outcome: str = "auto", baseline: str = "mu0_mean") -> pd.DataFrame:
    """Add per-item sensitivity to hidden confounding to an effects table.

    Columns added:

    * ``t_stat = ate / se``; ``dof`` (``n - 2`` unless given: a number, an array or a column
      name); ``partial_r2 = t^2 / (t^2 + dof)``, the partial R^2 of treatment with outcome,
      which a confounder explaining all residual outcome variance must reach with the
      treatment to explain the estimate away.
    * ``rv`` (``RV_q``) and ``rv_ci`` (``RV_{q,alpha}``), see :func:`robustness_value`;
      ``rv_ci`` is 0 when the ``1 - alpha`` interval already covers ``(1 - q) * ate``.
    * ``risk_ratio``, ``e_value`` and ``e_value_ci`` (1 when ``[ci_low, ci_high]`` covers
      zero; otherwise the E-value of the interval limit nearest the null):

      - binary outcome: ``RR = (p0 + ate) / p0`` with ``p0`` the item's mean untreated
        outcome (column ``baseline``, by default the mean outcome-model prediction under
        no exposure); interval limits likewise with ``p0`` held fixed;
      - continuous outcome: ``RR = exp(0.91 * ate / outcome_sd)`` (VanderWeele & Ding's
        approximation for standardised mean differences).

      ``outcome="auto"`` calls an outcome binary when the items' overall outcome variance
      equals ``m (1 - m)`` (true of 0/1 outcomes only).
    """
    from ..rank.table import check_effects_table

    columns = ["n"] if dof is None else [dof] if isinstance(dof, str) else []
    table = check_effects_table(effects, columns, owner="sensitivity")
    out = effects.copy()
    ate, se = table.values["ate"], table.values["se"]
    if dof is None:
        dof = table.values["n"] - 2
    elif isinstance(dof, str):
        dof = table.values[dof]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = ate / se
    out["t_stat"] = t
    out["dof"] = np.asarray(dof, dtype=float) * np.ones_like(t)
    out["partial_r2"] = t ** 2 / (t ** 2 + out["dof"].to_numpy())
    out["rv"] = robustness_value(t, out["dof"], q=q)
    out["rv_ci"] = robustness_value(t, out["dof"], q=q, alpha=alpha)
    if {"ci_low", "ci_high"} <= set(effects.columns):  # the table's own interval decides
        # (its dof may be Welch's, not n - 2: both rules must agree on "already covered")
        null = (1 - q) * ate
        covered = (effects["ci_low"].to_numpy() <= null) & (null <= effects["ci_high"].to_numpy())
        out["rv_ci"] = np.where(covered, 0.0, out["rv_ci"].to_numpy())

    kind = _outcome_kind(out) if outcome == "auto" else outcome
    if kind == "binary":
        p0 = out[baseline].to_numpy(float)
        to_rr = lambda d: np.maximum(p0 + d, 1e-12) / p0  # noqa: E731
    elif kind == "continuous":
        sd = out["outcome_sd"].to_numpy(float)
        to_rr = lambda d: np.exp(0.91 * d / sd)  # noqa: E731
    else:
        raise ValueError(f"outcome must be 'auto', 'binary' or 'continuous', got {outcome!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        low, high = out["ci_low"].to_numpy(float), out["ci_high"].to_numpy(float)
        nearest = np.where(ate > 0, to_rr(low), to_rr(high))
        out["risk_ratio"] = to_rr(ate)
        out["e_value"] = e_value(out["risk_ratio"])
        ci_value = np.where((low <= 0) & (high >= 0), 1.0, e_value(nearest))
    out["e_value_ci"] = np.where(np.isfinite(low) & np.isfinite(high), ci_value, np.nan)
    return out


def _outcome_kind(effects: pd.DataFrame) -> str:
    need = {"treated_mean", "control_mean", "n_treated", "n_control", "outcome_sd"}
    if not need <= set(effects.columns):
        raise ValueError(f"cannot tell the outcome type: pass outcome='binary' or "
                         f"'continuous' (auto needs columns {sorted(need)})")
    e = effects.dropna(subset=sorted(need))
    mean = ((e["treated_mean"] * e["n_treated"] + e["control_mean"] * e["n_control"])
            / (e["n_treated"] + e["n_control"]))
    bernoulli = np.isclose(e["outcome_sd"] ** 2, mean * (1 - mean), rtol=1e-6, atol=1e-9)
    return "binary" if len(e) and bool(bernoulli.all()) else "continuous"
