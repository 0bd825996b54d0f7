"""The batched per-item effect estimator."""
from .estimator import (ItemEffectEstimator, estimate_item_effects, resolve_device,
                        resolve_shrinkage)

__all__ = ["ItemEffectEstimator", "estimate_item_effects", "resolve_device", "resolve_shrinkage"]
