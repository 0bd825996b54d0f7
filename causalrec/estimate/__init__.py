"""The batched per-item effect estimator."""
from .api import estimate_item_effects, split_roles
from .estimator import ItemEffectEstimator, resolve_device, resolve_shrinkage
from .net import NetEffectEstimator, estimate_net_effects
from .net_pairs import spillover_pairs

__all__ = ["ItemEffectEstimator", "NetEffectEstimator", "estimate_item_effects",
           "estimate_net_effects", "resolve_device", "resolve_shrinkage", "spillover_pairs",
           "split_roles"]
