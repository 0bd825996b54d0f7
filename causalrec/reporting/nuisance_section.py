"""The report's section on the nuisance models: their out-of-fold fit and calibration."""
from __future__ import annotations

import numpy as np
from scipy import stats

from ..estimate.diagnostics import SMD_BALANCED, balance_verdict
from .html import format_number, html_table, paragraph

__all__ = ["nuisance_html", "calibration_verdict"]

_TEXT = ("AIPW combines a propensity model (who gets recommended what) with outcome models "
         "(what happens with and without the recommendation), each fitted on other rows than "
         "it predicts (cross-fitting). 'improvement' is one minus the ratio of a model's "
         "out-of-fold loss to the item-mean model's: what the confounders explain within "
         "items. Values near 0 mean the confounders explain little (then the weights do the "
         "adjusting, and intervals are wider); negative values mean the model overfits.")


def calibration_verdict(calibration, alpha: float = 0.05) -> dict:
    """Is the fitted propensity calibrated? Each non-empty bin's ``z`` (treated share minus
    mean fitted propensity, over the binomial standard error) is tested at ``alpha`` with a
    Bonferroni correction over the bins, so a calibrated model is flagged with probability at
    most ``alpha`` whatever the number of bins. Returns the bins tested, the threshold on |z|,
    the bins beyond it, the largest |z| and the rows-weighted mean |share - propensity|."""
    bins = calibration[calibration["n"] > 0]
    threshold = float(stats.norm.ppf(1 - alpha / (2 * max(len(bins), 1))))
    z = bins["z"].abs().to_numpy(float)
    gap = (bins["treated_share"] - bins["mean_propensity"]).abs().to_numpy(float)
    return dict(bins=len(bins), threshold=threshold, flagged=int((z > threshold).sum()),
                worst=float(np.nanmax(z)) if len(z) else float("nan"),
                mean_gap=float(np.average(gap, weights=bins["n"])) if len(bins) else float("nan"))


def nuisance_html(estimator) -> str:
    """Fit quality, propensity calibration and (flexible nuisances) the per-model choice."""
    if estimator is None or not hasattr(estimator, "propensity_"):
        return paragraph("Only an effects table was given: no nuisance diagnostics.", "note")
    out = paragraph(_TEXT)
    out += html_table(estimator.nuisance_quality(), caption="Out-of-fold fit")
    calibration = estimator.propensity_calibration_
    calibration = calibration[calibration["n"] > 0]
    if len(calibration) and estimator.log_.propensity is None:
        alpha = getattr(estimator, "alpha", 0.05)
        verdict = calibration_verdict(calibration, alpha)
        limit = format_number(verdict["threshold"])
        out += html_table(calibration, caption=(
            f"Propensity calibration: bins of the fitted propensity; |z| above {limit} "
            f"flags a bin (binomial error, Bonferroni over {verdict['bins']} bins at "
            f"{alpha:.0%})"))
        summary = (f"{verdict['flagged']} of {verdict['bins']} bins beyond |z| = {limit} "
                   f"(largest {format_number(verdict['worst'])}); the treated share differs "
                   f"from the fitted propensity by {format_number(verdict['mean_gap'])} on "
                   "average over rows.")
        if verdict["flagged"]:
            out += paragraph("The fitted propensities are miscalibrated: " + summary, "warn")
            if np.any(getattr(estimator, "balance_shift_", np.zeros(1)) > 0):
                out += paragraph(
                    "These are the propensities after the balancing step, which moves each "
                    "item's propensities so that its arms balance on the text components; "
                    "it aims at balance, not at calibrated probabilities (balance_penalty=None "
                    "turns it off).", "note")
        else:
            out += paragraph("The fitted propensities are calibrated within their binomial "
                             "error: " + summary)
    out += _balance_html(estimator)
    models = getattr(estimator, "nuisance_models_", None)
    if models is not None:
        out += html_table(models, caption="Flexible nuisances: out-of-fold losses and the "
                                          "weight on the flexible model")
    return out


def _balance_html(estimator, top: int = 15) -> str:
    """The confounders' balance after weighting, over the items estimated ("ok")."""
    verdict = balance_verdict(estimator)
    if verdict is None:
        return ""
    overview = verdict["overview"].sort_values("max_abs_smd_weighted", ascending=False,
                                               kind="stable")
    off, pairs = verdict["off"], len(verdict["balance"])
    caption = (f"Confounder balance: standardised mean differences between the arms before and "
               f"after weighting by the fitted propensities ({min(top, len(overview))} of "
               f"{len(overview)} columns, the least balanced first)")
    out = html_table(overview.head(top), caption=caption)
    what = (f"{off} of {pairs} (item, column) pairs stay imbalanced after weighting (|SMD| "
            f"above {SMD_BALANCED} and beyond chance for the item's effective sizes).")
    if off:
        return out + paragraph(
            "The weights leave some confounders imbalanced: " + what + " There the estimate "
            "leans on the outcome models; covariate_balance() lists the items.", "warn")
    return out + paragraph("The weights balance the confounders: " + what)
