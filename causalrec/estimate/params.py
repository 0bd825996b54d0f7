"""``ItemEffectEstimator``'s parameters, declared once: the constraints ``fit`` checks and the
command line's ``choices`` are both read from ``PARAMETER_CONSTRAINTS`` (no second list).

Kept free of torch so that ``causalrec --help`` and usage errors answer at once; the checks
that need torch import it when they run.
"""
from __future__ import annotations

import numpy as np

from ..utils.validation import Boolean, Callable, InstanceOf, Integer, Interval, Options

__all__ = ["PARAMETER_CONSTRAINTS", "MAX_FOLDS", "MAX_REPEATS", "string_choices"]

MAX_FOLDS = 50  # more folds only add fits: each holds out under 2% of an item's rows
# more splits only add fits (each one a full cross-fit): the split noise left in the
# variance is split_sd^2 / n_repeats, 1% of one split's at 100 ("auto" grows to 16)
MAX_REPEATS = 100


def _flexible_ok(value) -> bool:
    from ..nuisance import resolve_nuisance
    return not isinstance(value, str) and resolve_nuisance(value) is not None


def _torch_device_ok(value) -> bool:
    """A torch.device, or a string torch parses as one (e.g. "cuda:1")."""
    import torch
    return isinstance(value, torch.device) or (isinstance(value, str) and bool(torch.device(value)))


def _torch_dtype_ok(value) -> bool:
    import torch
    return value in (torch.float32, torch.float64)


def _shards_ok(value) -> bool:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return value >= 1
    values = np.asarray(value)
    return values.ndim == 1 and values.dtype.kind in "iu" and len(values) > 0 and values.min() >= 0


PARAMETER_CONSTRAINTS = {
    "method": [Options("aipw", "ipw", "or")],
    "normalize": [Boolean()],
    "nuisance": [Options("pooled", "per_item", "boosted", "factorised", "auto"),
                 Callable(_flexible_ok, "a scikit-learn estimator, a (propensity, outcome) "
                                        "pair of them or a FlexibleNuisance")],
    "n_folds": [Integer(1, MAX_FOLDS)],
    "n_repeats": [Integer(1, MAX_REPEATS), Options("auto")],
    "penalty": [Interval(0, None, "left")],
    "shrinkage": [Options("auto"), Interval(0, None, "neither")],
    "intercept_penalty": [Interval(0, None, "left")],
    "outcome_model": [Options("auto", "logistic", "linear")],
    "clip": [Interval(0, 0.5, "left")],
    "trim": [Options(None), Interval(0, 0.5, "neither")],
    "min_rows_per_arm": [Integer(1, None)],
    "min_ess": [Interval(0, None, "left")],
    "max_clipped": [Interval(0, 1, "right")],
    "alpha": [Interval(0, 1, "neither")],
    "estimand": [Options("population", "conditional")],
    "text_encoder": [Options(None), Callable(lambda v: hasattr(v, "encode"), "an encoder with encode()")],
    "text_components": [Integer(1, None)],
    "balance_penalty": [Options(None, "auto"), Interval(0, None, "neither")],
    "balance_columns": [Options("text"),
                        InstanceOf((list, tuple), "'text' or a list of column names")],
    "device": [Options("auto", "cpu", "cuda"),
               Callable(_torch_device_ok, "'cuda:N' or a torch.device")],
    "dtype": [Options("float32", "float64"), Callable(_torch_dtype_ok, "torch.float32 or torch.float64")],
    "seed": [Integer(0, 2**63 - 1)],
    "max_iter": [Integer(1, None)],
    "shards": [Callable(_shards_ok, "a positive integer or one shard id (>= 0) per item")],
    "refit_small_logs": [Boolean()],
}


def string_choices(name: str, constraints: dict = PARAMETER_CONSTRAINTS) -> tuple[str, ...]:
    """The named string values a parameter accepts (its ``Options``), in declared order."""
    return tuple(v for c in constraints[name] if isinstance(c, Options)
                 for v in c.values if isinstance(v, str))
