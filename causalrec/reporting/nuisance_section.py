"""The report's section on the nuisance models: their out-of-fold fit and calibration."""
from __future__ import annotations

from .html import html_table, paragraph

__all__ = ["nuisance_html"]

_TEXT = ("AIPW combines a propensity model (who gets recommended what) with outcome models "
         "(what happens with and without the recommendation), each fitted on other rows than "
         "it predicts (cross-fitting). 'improvement' is one minus the ratio of a model's "
         "out-of-fold loss to the item-mean model's: what the confounders explain within "
         "items. Values near 0 mean the confounders explain little (then the weights do the "
         "adjusting, and intervals are wider); negative values mean the model overfits.")


def nuisance_html(estimator) -> str:
    """Fit quality, propensity calibration and (flexible nuisances) the per-model choice."""
    if estimator is None or not hasattr(estimator, "propensity_"):
        return paragraph("Only an effects table was given: no nuisance diagnostics.", "note")
    out = paragraph(_TEXT)
    out += html_table(estimator.nuisance_quality(), caption="Out-of-fold fit")
    calibration = estimator.propensity_calibration_
    calibration = calibration[calibration["n"] > 0]
    if len(calibration) and estimator.log_.propensity is None:
        worst = float(calibration["z"].abs().max())
        out += html_table(calibration, caption="Propensity calibration (bins of the fitted "
                                               "propensity; |z| above ~3 flags miscalibration)")
        if worst > 3:
            out += paragraph(f"The fitted propensities are miscalibrated in at least one bin "
                             f"(largest |z| = {worst:.1f}): consider nuisance='auto' or more "
                             f"confounders.", "warn")
    models = getattr(estimator, "nuisance_models_", None)
    if models is not None:
        out += html_table(models, caption="Flexible nuisances: out-of-fold losses and the "
                                          "weight on the flexible model")
    return out
