"""Reports for people: the HTML kit (``causalrec.reporting.html``), the one summary type
``Summary``, the effect report and the fairness audit's page."""
from .effect_report import EffectReport
from .summary import Summary

__all__ = ["EffectReport", "Summary"]
