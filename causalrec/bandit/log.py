"""A bandit log as an ``InteractionLog``: every logged row is an impression of its item."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..schema import InteractionLog, SchemaError, _as_list

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


def _bandit_log(df, item, outcome, propensity, position, confounders) -> InteractionLog:
    """Validate the roles once (via ``InteractionLog``); non-numeric confounders become
    categorical (one-hot) columns."""
    if not isinstance(df, pd.DataFrame):
        raise SchemaError(None, f"expected a pandas DataFrame, got {type(df).__name__}")
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
                          propensity=propensity)
