"""The summary of a fitted ``ItemEffectEstimator`` (a ``causalrec.summary.Summary``)."""
from __future__ import annotations

import numpy as np

from ..summary import Summary


class EffectSummary(Summary):
    """Header facts, an overall (row-weighted) effect and the items with the strongest evidence."""

    title = "Per-item causal effects of recommendation"

    def __init__(self, estimator, top: int = 10):
        eff = estimator.effects_
        ok = eff[eff["status"] == "ok"]
        w = ok["n"] / ok["n"].sum() if len(ok) else ok["n"]
        self.overall = float((w * ok["ate"]).sum()) if len(ok) else np.nan
        self.overall_se = float(np.sqrt((w ** 2 * ok["se"] ** 2).sum())) if len(ok) else np.nan
        nuisance = f"{estimator.nuisance} (outcome: {estimator.outcome_family_})"
        if estimator.nuisance == "pooled":
            shrink = estimator.shrinkage_
            nuisance += (f", shrinkage {shrink['outcome']:g}" if len(set(shrink.values())) == 1
                         else ", shrinkage " + ", ".join(f"{k} {v:g}" for k, v in shrink.items()))
        info = {
            "Method": estimator.method.upper() + (" (normalised weights)" if estimator.method == "aipw"
                                                  and estimator.normalize else ""),
            "Nuisance models": nuisance,
            "Intervals for": ("the logged users' average effect (conditional on the confounders)"
                              if estimator.estimand == "conditional"
                              else "the population's average effect"),
            "Cross-fitting folds": estimator.n_folds,
            "Cross-fitting splits": _splits_line(estimator.n_repeats_, ok),
            "Estimate from": _estimate_from(estimator) if len(ok) else "no item estimated",
            "Rows": int(eff["n"].sum()),
            "Items": len(eff),
            "Items estimated (ok)": len(ok),
            "Confounder columns": len(estimator.design_columns_),
            "Propensity clip": f"{estimator.clip:g} (a tenth of an arm's share where that is less)",
            "Newton steps (max, incl. chord)": estimator.n_iter_,
            "Items not converged (max_iter)": int((~eff["converged"]).sum()),
            "Dropped columns": ", ".join(estimator.dropped_columns_) or "none",
            "Overall effect (row-weighted)": f"{self.overall:.5g} (se {self.overall_se:.3g})",
        }
        balance = _balance_line(estimator)
        if balance:
            info["Weighted balance (ok items)"] = balance
        models = getattr(estimator, "nuisance_models_", None)
        if models is not None:  # flexible nuisances only (None after a GLM fit)
            info["Weight on the flexible model"] = ", ".join(
                f"{m} {w:.2f}" for m, w in zip(models["nuisance"], models["weight_flexible"]))
            if "items_by_model" in models:  # the per-item choice by out-of-fold loss
                info["Items by model (out-of-fold loss)"] = "; ".join(
                    f"{m}: {c}" for m, c in zip(models["nuisance"], models["items_by_model"]))
        cols = [c for c in ["ate", "se", "ci_low", "ci_high", "p_value", "n", "n_treated",
                            "n_control", "naive_ate"] if c in eff]
        strongest = ok.assign(_z=(ok["ate"] / ok["se"]).abs()).nlargest(top, "_z")
        super().__init__(info, eff["status"].value_counts(),
                         strongest.set_index(estimator._keys())[cols],
                         "Strongest evidence, by |ate / se|")


def _splits_line(n_repeats: int, ok) -> str:
    """The splits averaged and, with several, how far one split's estimate strays: the
    items' median split_sd in units of their SE."""
    if n_repeats < 2 or not len(ok):
        return str(n_repeats)
    return f"{n_repeats} (split-to-split sd: median {float((ok['split_sd'] / ok['se']).median()):.2f} SE)"


def _estimate_from(estimator) -> str:
    """Where the small-log refit applies (``refit_small_logs``), the estimate and the per-row
    outputs are all-rows fits' while the variance is their leave-one-out predictions': said
    where read."""
    plan = estimator.plan_
    if estimator.refit_small_logs and plan.flexible is None and plan.tune_columns is not None:
        return "all-rows fits (small log refit); variance from their leave-one-out predictions"
    if plan.flexible is not None and any(getattr(fit, "held_out", None) is not None
                                         for fit in estimator.nuisance_fits_):
        return ("small items: all-rows offset GLMs plus out-of-fold flexible models (small "
                "log refit); variance from the out-of-fold fits")
    return "out-of-fold fits (cross-fitted)"


def _balance_line(estimator) -> str:
    """The weighted confounder balance in one line: the pairs off balance beyond chance and
    the largest weighted |SMD| over the ok items ("" where none was measured)."""
    from .diagnostics import balance_verdict
    verdict = balance_verdict(estimator)
    if verdict is None:
        return ""
    overview, balance = verdict["overview"], verdict["balance"]
    worst = overview.loc[overview["max_abs_smd_weighted"].idxmax()]
    return (f"{verdict['off']} of {len(balance)} item-column pairs "
            f"off; |SMD| max {worst['max_abs_smd_weighted']:.2f} ({worst['column']}), "
            f"median {balance['smd_weighted'].abs().median():.2f}")
