"""The batched per-item effect estimator."""
from .estimator import ItemEffectEstimator, estimate_item_effects, resolve_device

__all__ = ["ItemEffectEstimator", "estimate_item_effects", "resolve_device"]
