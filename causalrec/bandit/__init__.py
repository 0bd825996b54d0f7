"""Off-policy item and policy values from bandit logs (see ``causalrec.bandit.estimator``)."""
from .api import estimate_item_values, estimate_policy_value
from .estimator import BanditEstimator
from .policy import estimate_logging_policy
from .summary import BanditSummary

__all__ = ["BanditEstimator", "BanditSummary", "estimate_item_values", "estimate_policy_value",
           "estimate_logging_policy"]
