"""The checks every door for user frames shares, and their error: logs
(``causalrec.schema.InteractionLog``) and frames passed to a fitted model (users to score, a
policy table, through ``check_frame``): one level of column labels, each named column present
once, ids and categories of one kind, and, where rows are identified by their index (one user
per row), unique index labels. They sit below ``causalrec.schema`` (which re-exports them) so
that every layer can raise ``SchemaError``."""
from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

__all__ = ["SchemaError", "check_frame", "check_column_labels", "check_unique_columns",
           "check_key_values", "not_a_frame"]


class SchemaError(ValueError):
    """A column of the log is missing, mistyped or holds invalid values."""

    def __init__(self, column: str | None, problem: str):
        self.column = column
        self.problem = problem
        super().__init__(f"column {column!r}: {problem}" if column else problem)


def check_frame(frame, argument: str, columns=(), unique_index: bool = False) -> pd.DataFrame:
    """Return ``frame`` if it is a usable DataFrame, else raise a ``SchemaError`` naming
    ``argument`` (and the column) and saying what to do.

    columns : the columns the caller will read; each must be present exactly once.
    unique_index : the index labels identify the rows' results (e.g. ``recommend``'s
        ``user`` column), so a repeated label would merge two users' rows.
    """
    if not isinstance(frame, pd.DataFrame):
        raise not_a_frame(frame, f"{argument}: ")
    what = f"{argument!s}"
    check_column_labels(frame, what)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(missing[0], f"missing from {what}")
    check_unique_columns(frame, columns, what)
    if unique_index and frame.index.has_duplicates:
        repeated = frame.index[frame.index.duplicated()].unique()[:3].tolist()
        raise SchemaError(None, f"{argument}: index labels repeat (e.g. {repeated}); each row is "
                          "one user, named by its index label in the result: make them unique, "
                          "e.g. set_index('user_id') or reset_index(drop=True)")
    return frame


def not_a_frame(obj, prefix: str = "") -> SchemaError:
    """The error for something that is not a pandas DataFrame, named in full (a polars or
    pyarrow table is also called "DataFrame" / "Table"), with the conversion where it has one."""
    kind = type(obj)
    named = f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")
    convert = "; convert it with .to_pandas()" if hasattr(obj, "to_pandas") else (
        "; make it one, e.g. pd.DataFrame(...)" if isinstance(obj, (dict, list, np.ndarray))
        else "")
    return SchemaError(None, f"{prefix}expected a pandas DataFrame, got {named}{convert}")


def check_column_labels(frame: pd.DataFrame, what: str) -> None:
    """Column labels must be one level (a MultiIndex has no single column to name)."""
    if isinstance(frame.columns, pd.MultiIndex):
        raise SchemaError(None, f"{what} has MultiIndex columns ({frame.columns.nlevels} levels); "
                          "flatten them first, e.g. df.columns = ['_'.join(map(str, c)) for c in "
                          "df.columns]")


def check_unique_columns(frame: pd.DataFrame, columns, what: str) -> None:
    """Every column the caller names must be one column of the frame (``df[c]`` of a
    duplicated label is a frame, and would fail deep inside pandas)."""
    counts = frame.columns.value_counts()
    for col in dict.fromkeys(columns):
        if counts.get(col, 0) > 1:
            raise SchemaError(col, f"appears {counts[col]} times among the columns of {what}; "
                              "rename or drop the copies, e.g. df.loc[:, ~df.columns.duplicated()]")


def _type_kind(value) -> str:
    """Values of one kind compare as keys without surprise: 1 == 1.0 are one number, but
    1 and "1" (or True and 1) would be merged or split depending on the code path."""
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (numbers.Number, np.number)):
        return "number"
    return type(value).__name__


def check_key_values(s: pd.Series, col: str) -> None:
    """Ids and categories must be single values of one kind: a list (a Parquet list column)
    is refused, and so are mixed types such as 1 and "1", which different code paths would
    merge into one item or keep apart (the rule is: keys are compared as given, so a column
    must hold one kind; convert it, e.g. ``df[col].astype(str)``, to merge them)."""
    values = s.cat.categories.to_series() if isinstance(s.dtype, pd.CategoricalDtype) else s
    if values.dtype != object:
        return
    wrong = values[~values.map(pd.api.types.is_hashable)]
    if len(wrong):
        raise SchemaError(col, f"holds {len(wrong)} values that are not single values, e.g. "
                          f"{wrong.iloc[0]!r} ({type(wrong.iloc[0]).__name__}); "
                          "expected one id or category per row")
    if pd.api.types.infer_dtype(values, skipna=True) not in _MIXED:
        return
    examples: dict[str, object] = {}
    for value in pd.unique(values.dropna().to_numpy()):
        examples.setdefault(_type_kind(value), value)
    if len(examples) > 1:
        shown = ", ".join(f"{v!r} ({type(v).__name__})" for v in list(examples.values())[:4])
        raise SchemaError(col, f"mixes value types: {shown}; ids and categories are compared as "
                          "given, so make the column one type, e.g. df[col].astype(str) to merge "
                          "1 and '1'")


_MIXED = {"mixed", "mixed-integer", "mixed-integer-float", "unknown-array"}
