"""Group fairness of a recommender: effect disparity, exposure disparity, exposure versus
benefit and outcome metrics by group (``FairnessAudit``)."""
from .audit import AuditSummary, FairnessAudit

__all__ = ["FairnessAudit", "AuditSummary"]
