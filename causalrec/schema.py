"""Column roles of a logged-interaction table, validated once.

A log has one row per (user, item, context) opportunity: a binary treatment (the item was
recommended or exposed), an outcome, and the columns that confound the two.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .utils.suggest import did_you_mean

__all__ = ["InteractionLog", "SchemaError", "read_log", "csv_safe"]


class SchemaError(ValueError):
    """A column of the log is missing, mistyped or holds invalid values."""

    def __init__(self, column: str | None, problem: str):
        self.column = column
        self.problem = problem
        super().__init__(f"column {column!r}: {problem}" if column else problem)


def read_log(path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a log from CSV or Parquet (chosen by the file suffix); ``encoding`` is the text
    encoding of a CSV (e.g. "latin-1", "cp1252")."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such log file: {path}")
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    if suffix in {".csv", ".gz", ".tsv"}:
        try:
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding=encoding)
        except UnicodeDecodeError as exc:
            raise SchemaError(None, f"cannot read {path}: it is not {encoding} text ({exc.reason} "
                              f"at byte {exc.start}); pass its encoding, e.g. "
                              "encoding='latin-1' (--encoding on the command line)") from None
        except LookupError:
            raise ValueError(f"unknown text encoding {encoding!r} for {path}") from None
    raise SchemaError(None, f"cannot read {path.name}: expected a .csv or .parquet file")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot run as spreadsheet formulas: a cell starting with
    = + - @ (or tab / CR) gets a leading single quote (OWASP's CSV-injection advice). Only
    text cells: numbers, negative ones included (also as text, like "-3.5"), are written as
    they are."""
    out = frame.copy()
    for col in out.columns:
        values = out[col]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        text = values.map(_is_formula)
        if text.any():
            out[col] = values.where(~text, "'" + values.astype(object).where(text, "").astype(str))
    renamed = {c: "'" + c for c in out.columns if _is_formula(c)}
    return out.rename(columns=renamed) if renamed else out


def _is_formula(value) -> bool:
    if not (isinstance(value, str) and value.startswith(_FORMULA_START)):
        return False
    try:
        float(value)
        return False  # a number written as text ("-3.5") is not a formula
    except ValueError:
        return True


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


@dataclass
class InteractionLog:
    """A validated log with named column roles.

    Parameters
    ----------
    data : DataFrame, one row per opportunity.
    item : column (or columns) identifying the item; effects are estimated per item.
    treatment : binary column, 1 when the item was recommended / exposed.
    outcome : numeric column (click, purchase, watch time).
    confounders : numeric columns that affect both exposure and outcome.
    categorical : categorical confounders (one-hot encoded downstream).
    text : free-text confounders (embedded downstream, see ``causalrec.confounders``).
    propensity : logged probability of treatment; used instead of a fitted model.
    user : user identifier (not a confounder; kept for reports).
    group : sensitive user group, for fairness audits.
    """

    data: pd.DataFrame
    item: str | list[str]
    treatment: str
    outcome: str
    confounders: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    propensity: str | None = None
    user: str | None = None
    group: str | None = None

    def __post_init__(self):
        self.confounders = _as_list(self.confounders)
        self.categorical = _as_list(self.categorical)
        self.text = _as_list(self.text)
        self._validate()

    @property
    def item_columns(self) -> list[str]:
        return _as_list(self.item)

    @property
    def roles(self) -> dict[str, list[str]]:
        """Role name -> columns, for every role that is set."""
        roles = {
            "item": self.item_columns,
            "treatment": [self.treatment],
            "outcome": [self.outcome],
            "confounders": self.confounders,
            "categorical": self.categorical,
            "text": self.text,
            "propensity": _as_list(self.propensity),
            "user": _as_list(self.user),
            "group": _as_list(self.group),
        }
        return {role: cols for role, cols in roles.items() if cols}

    @property
    def outcome_is_binary(self) -> bool:
        values = self.data[self.outcome].to_numpy()
        if values.dtype.kind in "iub":  # integers: a range check, no set lookups
            return bool(values.min() >= 0 and values.max() <= 1)
        return bool(np.isin(values, [0, 1]).all())

    def _validate(self) -> None:
        df = self.data
        if not isinstance(df, pd.DataFrame):
            raise SchemaError(None, f"expected a pandas DataFrame, got {type(df).__name__}")
        if len(df) == 0:
            raise SchemaError(None, "the log is empty (no rows)")
        seen: dict[str, str] = {}
        for role, cols in self.roles.items():
            for col in cols:
                if not isinstance(col, str) and not np.isscalar(col):
                    raise SchemaError(str(col), f"role {role!r} expects column names")
                if col in seen and not (role == "group" and seen[col] == "categorical"):
                    raise SchemaError(col, f"given two roles: {seen[col]!r} and {role!r}")
                seen.setdefault(col, role)
                if col not in df.columns:
                    raise SchemaError(col, f"missing from the log (role {role!r})"
                                           + did_you_mean(col, df.columns))
        for col in self.item_columns:
            _check_no_missing(df[col], col)
        for col in self.item_columns + self.categorical:
            _check_scalar_values(df[col], col)
        self._check_treatment(df[self.treatment])
        for col in [self.outcome, *self.confounders]:
            _check_finite_numeric(df[col], col)
        if self.propensity is not None:
            p = df[self.propensity]
            _check_finite_numeric(p, self.propensity)
            bad = int(((p <= 0) | (p > 1)).sum())
            if bad:
                raise SchemaError(self.propensity, f"{bad} logged propensities outside (0, 1]")
            # a row logged with probability 1 of treatment could not have been a control
            control = (df[self.treatment].to_numpy(dtype=float) == 0) & (p.to_numpy(dtype=float) >= 1)
            if control.any():
                raise SchemaError(self.propensity, f"{int(control.sum())} control rows have a "
                                  "logged propensity of 1 (they could not have been controls)")
        for col in self.text:
            values = df[col]
            wrong = values[values.notna() & ~values.map(lambda v: isinstance(v, str))]
            if len(wrong):
                raise SchemaError(
                    col, f"text column holds {len(wrong)} non-string values, "
                    f"e.g. {wrong.iloc[0]!r} ({type(wrong.iloc[0]).__name__})")
        if self.group is not None:
            _check_no_missing(df[self.group], self.group)

    def _check_treatment(self, t: pd.Series) -> None:
        if t.isna().any():
            raise SchemaError(self.treatment, f"{int(t.isna().sum())} missing treatment values")
        if not (pd.api.types.is_bool_dtype(t) or pd.api.types.is_numeric_dtype(t)):
            raise SchemaError(self.treatment, f"treatment must be binary 0/1, got dtype {t.dtype}")
        values = np.unique(t.to_numpy(dtype=float))
        if not np.isin(values, [0.0, 1.0]).all():
            shown = ", ".join(f"{v:g}" for v in values[:5])
            raise SchemaError(self.treatment, f"treatment must be binary 0/1, found values {shown}")


def _check_no_missing(s: pd.Series, col: str) -> None:
    if s.isna().any():
        raise SchemaError(col, f"{int(s.isna().sum())} missing values")


def _check_scalar_values(s: pd.Series, col: str) -> None:
    """Item ids and categories must be single values (a Parquet list column is not)."""
    if s.dtype != object:
        return
    wrong = s[~s.map(pd.api.types.is_hashable)]
    if len(wrong):
        raise SchemaError(col, f"holds {len(wrong)} values that are not single values, e.g. "
                          f"{wrong.iloc[0]!r} ({type(wrong.iloc[0]).__name__}); "
                          "expected one id or category per row")


def _check_finite_numeric(s: pd.Series, col: str) -> None:
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        raise SchemaError(col, f"must be numeric, got dtype {s.dtype}")
    values = s.to_numpy()
    if values.dtype.kind in "iub":  # plain integers and booleans are finite
        return
    if values.dtype.kind != "f":  # extension types (nullable integers, ...): NA becomes NaN
        values = s.to_numpy(dtype=float)
    if not np.isfinite(values).all():  # no float64 copy of float32 columns
        raise SchemaError(col, f"{int((~np.isfinite(values)).sum())} NaN or infinite values")
