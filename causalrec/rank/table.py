"""The one door for effects tables (``rank_items``, ``compare_policies``, ``EffectReport``,
``sensitivity``): bad tables get a ``SchemaError`` naming the column or the items, and every
row that cannot be ranked gets a reason in ``rank_status``.

Rules (the README's reliability table lists them):

* a DataFrame with unique, flat column names, at least one row, the columns ``item``,
  ``ate``, ``se`` and those the caller needs;
* numeric columns hold numbers: float, integer, nullable ``Float64`` / ``Int64`` (``<NA>``
  read as NaN) or object columns of numbers; text (also numbers written as text, ``"0.1"``)
  and booleans are an error naming the column: convert with ``pd.to_numeric`` first, so a
  typo never becomes a silent NaN;
* negative standard errors are an error naming the items;
* item keys (``item`` and, in an estimator's table, the segment columns between ``item`` and
  ``ate``) are compared as given: a key column mixing types (``1`` and ``"1"``) or holding
  missing labels is an error, and so is an item with several rows (naming the items);
* rows with a missing / infinite ``ate`` or ``se``, ``se == 0`` or a ``status`` other than
  "ok" are kept, not ranked, with the reason in ``rank_status``; rows too extreme to inform
  the prior (``causalrec.rank.prior.uninformative_rows``) likewise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..schema import SchemaError

__all__ = ["EffectsTable", "check_effects_table", "effects_keys"]

_SHOWN = 5  # items named in an error message


def effects_keys(effects: pd.DataFrame) -> list:
    """The item key columns: ``item`` and, when ``item`` comes first (an estimator's table),
    the segment columns between it and ``ate``."""
    columns = list(effects.columns)
    if columns and columns[0] == "item" and "ate" in columns:
        return columns[: max(1, columns.index("ate"))]
    return ["item"]


@dataclass
class EffectsTable:
    """A checked effects table: the caller's frame (unchanged), its item keys, its numeric
    columns as float arrays and, per row, why it cannot be ranked ("ok" when it can)."""

    frame: pd.DataFrame
    keys: list
    values: dict
    row_status: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        return self.row_status == "ok"

    def labels(self, mask) -> list:
        """The item labels of the rows in ``mask`` (for messages)."""
        return _labels(self.frame, self.keys, mask)


def check_effects_table(effects, required=(), *, owner: str = "effects") -> EffectsTable:
    """Check ``effects`` (see the module docstring); ``required`` are further numeric
    columns the caller needs. Raises ``TypeError`` / ``SchemaError`` (a ``ValueError``)."""
    if not isinstance(effects, pd.DataFrame):
        raise TypeError(f"{owner} expects an effects DataFrame, got {type(effects).__name__}")
    if isinstance(effects.columns, pd.MultiIndex):
        raise SchemaError(None, "the effects table has MultiIndex columns; flatten them "
                          "(item, ate, se, ...) first")
    duplicated = effects.columns[effects.columns.duplicated()].unique().tolist()
    if duplicated:
        raise SchemaError(duplicated[0], f"the effects table has several columns named "
                          f"{duplicated}; keep one of each")
    numeric = list(dict.fromkeys(["ate", "se", *required]))
    missing = [c for c in ["item", *numeric] if c not in effects.columns]
    if missing:
        raise SchemaError(None, f"effects lacks required column(s) {missing}")
    if len(effects) == 0:
        raise SchemaError(None, "the effects table is empty (no rows)")
    keys = effects_keys(effects)
    for key in keys:
        _check_key(effects[key], key)
    _check_unique_items(effects, keys)
    values = {c: _as_float(effects[c], c) for c in numeric}
    ate, se = values["ate"], values["se"]
    negative = se < 0
    if negative.any():
        named = _labels(effects, keys, negative)
        raise SchemaError("se", f"standard errors must be non-negative; negative for "
                          f"{len(named)} item(s): {_shown(named)}")
    status = np.full(len(effects), "ok", dtype=object)
    if "status" in effects.columns:
        status[(effects["status"] != "ok").fillna(True).to_numpy(bool)] = "status_not_ok"
    status[(status == "ok") & ~np.isfinite(ate)] = "ate_not_finite"
    status[(status == "ok") & ~np.isfinite(se)] = "se_not_finite"
    status[(status == "ok") & (se == 0)] = "se_zero"
    return EffectsTable(effects, keys, values, status)


def _as_float(column: pd.Series, name) -> np.ndarray:
    """A numeric column as float64 (``<NA>`` -> NaN); text or booleans are an error."""
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise SchemaError(name, "holds True / False values where numbers are expected")
    if pd.api.types.is_complex_dtype(dtype):
        raise SchemaError(name, "holds complex numbers; give the real part")
    if pd.api.types.is_numeric_dtype(dtype):
        return column.to_numpy(dtype=float, na_value=np.nan)
    present = column.dropna()
    wrong = present[~present.map(_is_real_number)]
    if len(wrong):
        example = wrong.iloc[0]
        raise SchemaError(name, f"holds {len(wrong)} non-numeric value(s), e.g. {example!r} "
                          f"({type(example).__name__}); convert the column with "
                          f"pd.to_numeric(effects[{name!r}]) and check the values it cannot "
                          "read")
    return column.to_numpy(dtype=float, na_value=np.nan)


def _is_real_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _check_key(column: pd.Series, name) -> None:
    missing = column.isna().to_numpy()
    if missing.any():
        raise SchemaError(name, f"{int(missing.sum())} row(s) have no item label; drop or "
                          "name them")
    if pd.api.types.is_object_dtype(column.dtype):
        kinds = {("number" if _is_real_number(v) else type(v).__name__) for v in column}
        if len(kinds) > 1:
            raise SchemaError(name, f"item labels mix types ({', '.join(sorted(kinds))}), so "
                              "1 and '1' would be different items; give the column one type, "
                              f"e.g. effects[{name!r}].astype(str)")


def _check_unique_items(effects: pd.DataFrame, keys: list) -> None:
    twice = effects.duplicated(keys, keep=False).to_numpy()
    if twice.any():
        named = _labels(effects, keys, twice)
        raise SchemaError(keys[0], f"{len(named)} item(s) have several rows: {_shown(named)}; "
                          "keep one row per item (e.g. drop_duplicates or aggregate first)")


def _shown(labels: list) -> str:
    return f"{labels[:_SHOWN]}{' ...' if len(labels) > _SHOWN else ''}"


def _labels(effects: pd.DataFrame, keys: list, mask) -> list:
    rows = effects.loc[np.asarray(mask, bool), keys]
    labels = [r[0] if len(keys) == 1 else r for r in rows.itertuples(index=False, name=None)]
    return list(dict.fromkeys(labels))
