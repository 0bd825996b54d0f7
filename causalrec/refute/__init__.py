"""Is each item's effect believable? Refutation checks (one object per check, batched over
items), sensitivity to hidden confounding, and a DoWhy cross-check of one item."""
from .checks import CHECKS, DataSubsets, PlaceboTreatment, RandomCommonCause
from .deep_dive import deep_dive
from .refutations import refute_item_effects, summarize_refutations
from .sensitivity import e_value, robustness_value, sensitivity

__all__ = ["refute_item_effects", "summarize_refutations", "sensitivity", "robustness_value",
           "e_value", "deep_dive", "CHECKS", "PlaceboTreatment", "RandomCommonCause",
           "DataSubsets"]
