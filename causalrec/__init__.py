"""causalrec: what does recommending this item actually cause?

Per-item causal effects of recommendations from logged data, batched on torch.
Heavy modules (torch, transformers, dowhy) load on first use of a name.
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "InteractionLog": "schema",
    "Roles": "schema",
    "SchemaError": "schema",
    "read_log": "schema",
    "estimate_item_effects": "estimate",
    "ItemEffectEstimator": "estimate",
    "estimate_net_effects": "estimate",
    "NetEffectEstimator": "estimate",
    "spillover_pairs": "estimate",
    "TextEncoder": "confounders",
    "TextReducer": "confounders",
    "TextConfounders": "confounders",
    "CausalGraph": "identify",
    "GraphError": "identify",
    "NotIdentifiableError": "identify",
    "refute_item_effects": "refute",
    "summarize_refutations": "refute",
    "sensitivity": "refute",
    "deep_dive": "refute",
    "rank_items": "rank",
    "EmpiricalBayesPrior": "rank",
    "compare_policies": "rank",
    "EffectReport": "reporting",
    "FairnessAudit": "fairness",
    "estimate_item_values": "bandit",
    "estimate_policy_value": "bandit",
    "SegmentGLM": "glm",
    "NotFittedError": "exceptions",
    "ConvergenceWarning": "exceptions",
    "DataWarning": "exceptions",
    "UpliftModel": "uplift",
    "evaluate_policy": "uplift",
}

__all__ = sorted(_EXPORTS) + ["datasets", "__version__"]


def __getattr__(name):
    if name == "datasets":
        return import_module("causalrec.datasets")
    if name in _EXPORTS:
        return getattr(import_module(f"causalrec.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'causalrec' has no attribute {name!r}")


def __dir__():
    return __all__
