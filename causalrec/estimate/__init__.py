"""The batched per-item effect estimator."""
from .api import estimate_item_effects, split_roles
from .estimator import ItemEffectEstimator, resolve_device, resolve_shrinkage

__all__ = ["ItemEffectEstimator", "estimate_item_effects", "resolve_device", "resolve_shrinkage",
           "split_roles"]
