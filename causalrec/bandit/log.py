"""A bandit log as an ``InteractionLog``: every logged row is an impression of its item."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..exceptions import DataWarning
from ..schema import InteractionLog, SchemaError, _as_list
from ..utils.frames import not_a_frame

_SHOWN = "__shown__"   # constant treatment column: every logged row is an impression


def _catalogue(logged: pd.Series, items) -> np.ndarray:
    seen = np.sort(logged.unique())
    if items is None:
        return seen
    items = pd.Index(items)
    if items.has_duplicates:
        raise ValueError("items: the catalogue lists an item twice")
    missing = seen[items.get_indexer(seen) < 0]
    if len(missing):
        raise SchemaError(logged.name, f"logged item(s) missing from items=: "
                                       f"{', '.join(map(repr, missing[:5].tolist()))}")
    return np.asarray(items)


def _bandit_log(df, item, outcome, propensity, position, confounders,
                missing="error") -> InteractionLog:
    """Validate the roles once (via ``InteractionLog``, with its ``missing`` policy);
    non-numeric confounders become categorical (one-hot) columns."""
    if not isinstance(df, pd.DataFrame):
        raise not_a_frame(df)
    if propensity is None:
        raise SchemaError(None, "a bandit log needs the logged propensity column (propensity=)")
    confounders = _as_list(confounders)
    numeric = [c for c in confounders if c in df and (pd.api.types.is_numeric_dtype(df[c])
                                                      or pd.api.types.is_bool_dtype(df[c]))]
    if _SHOWN in df:
        raise SchemaError(_SHOWN, "reserved column name")
    return InteractionLog(df.assign(**{_SHOWN: 1}), item=[item] + ([position] if position else []),
                          treatment=_SHOWN, outcome=outcome, confounders=numeric,
                          categorical=[c for c in confounders if c not in numeric],
                          propensity=propensity, missing=missing)


# Under a valid logging policy E[1 / p] over a position's rows is the number of items it can
# show there (sum over a of p(a) / p(a)), so at most the catalogue size; a mean inverse
# propensity above it by more than this many standard errors means the propensities are too
# small (e.g. a slate's probability logged instead of each impression's own). A heavy tail of
# valid weights makes the sample mean fall short of its expectation, not exceed it.
PLAUSIBILITY_Z = 5.0


def inverse_propensity_weights(p: np.ndarray, max_weight, group: np.ndarray, n_groups: int,
                               n_items: int, column: str):
    """Clipped weights 1 / p, which rows were clipped, and the per-group plausibility check.

    ``max_weight``: "auto" caps a weight at the number of logged rows (a row logged with a
    probability below 1 / n would otherwise outweigh the whole log, and no log of n rows can
    confirm such a probability); a number caps it there; None leaves weights unbounded.
    Returns ``(weights, clipped, cap, check)``; ``check`` has, per group, ``n, mean_weight,
    n_items, z, plausible``.
    """
    raw = 1.0 / p
    cap = float(len(p)) if isinstance(max_weight, str) else (np.inf if max_weight is None
                                                             else float(max_weight))
    clipped = raw > cap
    n = np.bincount(group, minlength=n_groups)
    unit = raw.max()  # moments of raw / unit: a weight of 1e300 must not square to inf
    s1 = np.bincount(group, weights=raw / unit, minlength=n_groups)
    s2 = np.bincount(group, weights=(raw / unit) ** 2, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        sd = np.sqrt(np.maximum(s2 / n - mean ** 2, 0) * n / np.maximum(n - 1, 1))
        z = (mean - n_items / unit) / (sd / np.sqrt(n))
        mean = mean * unit
    # equal weights (sd 0) above the catalogue size are implausible outright
    plausible = ~((mean > n_items * (1 + 1e-9)) & ~(z <= PLAUSIBILITY_Z))
    check = pd.DataFrame({"n": n, "mean_weight": mean, "n_items": n_items, "z": z,
                          "plausible": plausible})
    if not plausible.all():
        bad = check[~plausible]
        warnings.warn(DataWarning(
            f"column {column!r}: the mean inverse propensity is {bad['mean_weight'].iloc[0]:.4g} "
            f"in {len(bad)} of {n_groups} position group(s), above the {n_items} catalogue items "
            "(under a valid logging policy it is at most the number of items it can show): the "
            "propensities are too small, e.g. a slate's probability rather than each "
            "impression's own; estimates there get status 'implausible_propensity'"), stacklevel=4)
    return np.minimum(raw, cap), clipped, cap, check
