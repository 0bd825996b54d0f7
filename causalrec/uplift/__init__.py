"""Per-user causal recommendations: which items does recommending help for this user."""
from .model import UpliftModel
from .policy import PolicyEvaluation, evaluate_policy

__all__ = ["UpliftModel", "evaluate_policy", "PolicyEvaluation"]
