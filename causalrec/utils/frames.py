"""The door for frames a user passes to a fitted model (users to score, a policy table):
one level of column labels, each named column present once, and, where rows are identified
by their index (one user per row), unique index labels. Logs have their own door,
``causalrec.schema.InteractionLog``; the column checks are shared with it."""
from __future__ import annotations

import pandas as pd

from ..schema import SchemaError, check_column_labels, check_unique_columns

__all__ = ["check_frame"]


def check_frame(frame, argument: str, columns=(), unique_index: bool = False) -> pd.DataFrame:
    """Return ``frame`` if it is a usable DataFrame, else raise a ``SchemaError`` naming
    ``argument`` (and the column) and saying what to do.

    columns : the columns the caller will read; each must be present exactly once.
    unique_index : the index labels identify the rows' results (e.g. ``recommend``'s
        ``user`` column), so a repeated label would merge two users' rows.
    """
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(None, f"{argument}: expected a pandas DataFrame, got {type(frame).__name__}")
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
