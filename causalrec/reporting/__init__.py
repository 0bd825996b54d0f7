"""Reports for people: the effect report and the fairness audit's page, built with the HTML kit
(``causalrec.reporting.html``); ``Summary``, the one summary type, is re-exported here (it lives
in ``causalrec.summary``, below the estimators that return one)."""
from ..summary import Summary
from .effect_report import EffectReport

__all__ = ["EffectReport", "Summary"]
