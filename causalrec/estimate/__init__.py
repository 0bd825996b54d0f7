"""The batched per-item effect estimator. Names load on first use, so that light modules
(``causalrec.estimate.params``, read by the command line's parser) come without torch."""
from importlib import import_module

_EXPORTS = {"estimate_item_effects": "api", "split_roles": "api",
            "ItemEffectEstimator": "estimator", "resolve_device": "estimator",
            "resolve_shrinkage": "estimator", "NetEffectEstimator": "net",
            "estimate_net_effects": "net", "spillover_pairs": "net"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
