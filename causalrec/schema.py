"""Column roles of a logged-interaction table, validated once.

A log has one row per (user, item, context) opportunity: a binary treatment (the item was
recommended or exposed), an outcome, and the columns that confound the two.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# the frame checks and their error live below this module (every layer raises SchemaError);
# they are part of this module's API too
from .utils.frames import (SchemaError, check_column_labels, check_key_values, check_unique_columns,
                           not_a_frame)
from .utils.io import csv_safe
from .utils.read import COMPRESSIONS, read_log
from .utils.suggest import did_you_mean

__all__ = ["InteractionLog", "Roles", "SchemaError", "read_log", "csv_safe", "split_roles",
           "COMPRESSIONS"]


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or np.isscalar(value):
        return [value]
    return list(value)


def split_roles(item, by, confounders, categorical, text):
    """Segment key columns (item + by; ``item`` may name several, as ``by`` does) and the
    confounder roles without them: a segment column is constant within each segment, so
    it cannot confound there."""
    keys = _as_list(item)
    keys += [col for col in _as_list(by) if col not in keys]
    return (keys, *([c for c in _as_list(cols) if c not in keys[1:]]
                    for cols in (confounders, categorical, text)))


_ROLE_NAMES = ("item", "treatment", "outcome", "confounders", "categorical", "text", "propensity",
               "user", "group", "unit")
# what a missing value in a numeric confounder means: bad input, or a fact to adjust for
MISSING_POLICIES = ("error", "indicator")


@dataclass(frozen=True)
class Roles(Mapping):
    """Which columns of a log play which role: the one way roles travel from a public
    function down to the estimators (``InteractionLog.from_roles``, ``log.roles``).

    Attributes hold the roles as ``InteractionLog`` takes them: ``item`` one column (text) or
    several (a tuple), ``treatment`` and ``outcome`` one column each, ``confounders``,
    ``categorical`` and ``text`` tuples, ``propensity``, ``user``, ``group`` and ``unit`` one
    column or None, ``missing`` the log's missing-value policy (``InteractionLog``). As a
    read-only mapping it is role -> list of columns, for the roles that are set (what
    ``log.roles`` always was). Build it from the public functions' keyword arguments with
    ``Roles.from_arguments``.
    """

    item: str | tuple[str, ...]
    treatment: str
    outcome: str
    confounders: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    propensity: str | None = None
    user: str | None = None
    group: str | None = None
    unit: str | None = None
    missing: str = "error"

    @classmethod
    def from_arguments(cls, *, item, treatment, outcome, confounders=None, categorical=None,
                       text=None, propensity=None, user=None, group=None, unit=None,
                       by=None, missing="error") -> "Roles":
        """Roles from the public functions' keyword arguments: a column name or a list of
        them, None for none. ``by`` (extra segment columns) joins the item as a key and
        leaves the confounder roles (see ``split_roles``)."""
        if by is not None:
            item, confounders, categorical, text = split_roles(item, by, confounders,
                                                               categorical, text)
        return cls(item=item if isinstance(item, str) else tuple(_as_list(item)),
                   treatment=treatment, outcome=outcome,
                   confounders=tuple(_as_list(confounders)),
                   categorical=tuple(_as_list(categorical)), text=tuple(_as_list(text)),
                   propensity=propensity, user=user, group=group, unit=unit, missing=missing)

    @property
    def item_columns(self) -> list[str]:
        return _as_list(self.item)

    def keywords(self) -> dict:
        """The roles as ``InteractionLog``'s keyword arguments (lists for several columns)."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in ((n, getattr(self, n)) for n in (*_ROLE_NAMES, "missing"))}

    def _columns(self) -> dict[str, list[str]]:
        return {name: cols for name in _ROLE_NAMES if (cols := _as_list(getattr(self, name)))}

    def __getitem__(self, role: str) -> list[str]:
        return self._columns()[role]

    def __iter__(self):
        return iter(self._columns())

    def __len__(self) -> int:
        return len(self._columns())



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
    unit : the unit a row belongs to (user or session id: any hashable values, no missing
        ones; may be the ``user`` column): all of a unit's rows share one cross-fitting fold,
        so a unit seen under many items never sits on both sides of a split.
    missing : what a missing value (NaN, None, NA) in a numeric confounder means. "error"
        (default): bad input, a ``SchemaError``. "indicator": the missing-indicator method;
        the design fills a column's missing values with its median over the observed fitted
        rows and adds a 0/1 column ``<name>=__missing__`` as a confounder of its own, so that
        missingness itself is adjusted for (in recommender logs it is informative: a new
        user has no tenure). Rows are kept, not dropped: dropping them, or filling without
        the indicator, biases the effects when missingness confounds exposure and outcome.
        Infinite values stay an error. Missing categorical values are always a level of
        their own.
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
    unit: str | None = None
    missing: str = "error"

    def __post_init__(self):
        if not (isinstance(self.missing, str) and self.missing in MISSING_POLICIES):
            raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {self.missing!r}")
        self.confounders = _as_list(self.confounders)
        self.categorical = _as_list(self.categorical)
        self.text = _as_list(self.text)
        self._validate()

    @property
    def item_columns(self) -> list[str]:
        return _as_list(self.item)

    @property
    def roles(self) -> "Roles":
        """The log's roles (a frozen ``Roles``; as a mapping: role -> columns, set roles only)."""
        return Roles(item=self.item if isinstance(self.item, str) else tuple(self.item_columns),
                     treatment=self.treatment, outcome=self.outcome,
                     confounders=tuple(self.confounders), categorical=tuple(self.categorical),
                     text=tuple(self.text), propensity=self.propensity, user=self.user,
                     group=self.group, unit=self.unit, missing=self.missing)

    @classmethod
    def from_roles(cls, data: pd.DataFrame, roles: "Roles") -> "InteractionLog":
        """The validated log of ``data`` with these roles."""
        return cls(data, **roles.keywords())

    @property
    def outcome_is_binary(self) -> bool:
        values = self.data[self.outcome].to_numpy()
        if values.dtype.kind in "iub":  # integers: a range check, no set lookups
            return bool(values.min() >= 0 and values.max() <= 1)
        return bool(np.isin(values, [0, 1]).all())

    def _validate(self) -> None:
        df = self.data
        if not isinstance(df, pd.DataFrame):
            raise not_a_frame(df)
        if len(df) == 0:
            raise SchemaError(None, "the log is empty (no rows)")
        check_column_labels(df, "the log")
        seen: dict[str, str] = {}
        for role, cols in self.roles.items():
            for col in cols:
                if not isinstance(col, str):  # 0 and "0" would be different columns
                    raise SchemaError(None, f"role {role!r} expects column names as text, got "
                                      f"{col!r} ({type(col).__name__}); name the columns with "
                                      "strings, e.g. df.columns = df.columns.map(str)")
                shared = (role, seen.get(col)) in {("group", "categorical"), ("unit", "user")}
                if col in seen and not shared:
                    raise SchemaError(col, f"listed twice in {role!r}" if seen[col] == role
                                      else f"given two roles: {seen[col]!r} and {role!r}")
                seen.setdefault(col, role)
                if col not in df.columns:
                    raise SchemaError(col, f"missing from the log (role {role!r})" + (
                        "; it is a level of the index: make it a column with df.reset_index()"
                        if col in df.index.names else did_you_mean(col, df.columns)))
        check_unique_columns(df, [c for cols in self.roles.values() for c in cols], "the log")
        for col in self.item_columns:
            _check_no_missing(df[col], col)
        for col in (self.item_columns + self.categorical + _as_list(self.group)
                    + _as_list(self.user) + _as_list(self.unit)):
            check_key_values(df[col], col)
        self._check_treatment(df[self.treatment])
        _check_finite_numeric(df[self.outcome], self.outcome)
        for col in self.confounders:
            _check_finite_numeric(df[col], col, allow_missing=self.missing == "indicator",
                                  remedy=MISSING_REMEDY)
        if self.propensity is not None:
            p = df[self.propensity]
            _check_finite_numeric(p, self.propensity)
            bad = int(((p <= 0) | (p > 1)).sum())
            if bad:
                percent = bool(((p > 0) & (p <= 100)).all())  # a share logged as 0-100
                raise SchemaError(self.propensity, f"{bad} logged propensities outside (0, 1], "
                                  f"e.g. {float(p[(p <= 0) | (p > 1)].iloc[0]):g}" + (
                                      "; they look like percentages: divide the column by 100"
                                      if percent else ""))
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
        if self.unit is not None:
            _check_no_missing(df[self.unit], self.unit)

    def _check_treatment(self, t: pd.Series) -> None:
        if t.isna().any():
            raise SchemaError(self.treatment, f"{int(t.isna().sum())} missing treatment values")
        if not (pd.api.types.is_bool_dtype(t) or _is_real_numeric(t)):
            shown = ", ".join(repr(v) for v in pd.unique(t.to_numpy(dtype=object))[:5])
            raise SchemaError(self.treatment, f"treatment must be binary 0/1, got dtype {t.dtype} "
                              f"(values {shown}); code it as 0/1 yourself, e.g. df[col] = "
                              "(df[col] == <the recommended value>).astype(int)")
        values = np.unique(t.to_numpy(dtype=float))
        if not np.isin(values, [0.0, 1.0]).all():
            shown = ", ".join(f"{v:g}" for v in values[:5])
            raise SchemaError(self.treatment, f"treatment must be binary 0/1, found values {shown}"
                              "; code it as 0/1 yourself, e.g. df[col] = (df[col] == "
                              "<the recommended value>).astype(int)")


def _check_no_missing(s: pd.Series, col: str) -> None:
    if s.isna().any():
        raise SchemaError(col, f"{int(s.isna().sum())} missing values")


def _is_real_numeric(s: pd.Series) -> bool:
    """Numbers on the real line: pandas counts complex ones numeric too, and casting them to
    float silently drops their imaginary parts."""
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_complex_dtype(s)


MISSING_REMEDY = ("pass missing='indicator' (--missing indicator on the command line) to keep "
                  "these rows: the missing values are filled and a 0/1 column marking them is "
                  "adjusted for")


def _check_finite_numeric(s: pd.Series, col: str, allow_missing: bool = False,
                          remedy: str | None = None) -> None:
    """Real numbers, finite; missing values (NaN, NA) too when ``allow_missing``. An infinite
    value is bad input either way; ``remedy`` ends the message about missing values."""
    if not (_is_real_numeric(s) or pd.api.types.is_bool_dtype(s)):
        raise SchemaError(col, f"must be numeric (real numbers), got dtype {s.dtype}; "
                          + _numeric_remedy(s))
    values = s.to_numpy()
    if values.dtype.kind in "iub":  # plain integers and booleans are finite
        return
    if values.dtype.kind != "f":  # extension types (nullable integers, ...): NA becomes NaN
        values = s.to_numpy(dtype=float, na_value=np.nan)
    if np.isfinite(values).all():  # no float64 copy of float32 columns
        return
    n_inf, n_nan = int(np.isinf(values).sum()), int(np.isnan(values).sum())
    if n_inf:
        raise SchemaError(col, f"{n_inf} infinite values" + (f" (and {n_nan} NaN)" if n_nan else ""))
    if not allow_missing:
        raise SchemaError(col, f"{n_nan} NaN (missing) values" + (f"; {remedy}" if remedy else ""))


def _numeric_remedy(s: pd.Series) -> str:
    """What to do with a column that is not numeric: its dtype says what it holds."""
    if pd.api.types.is_timedelta64_dtype(s):
        return "encode the durations as numbers, e.g. df[col].dt.total_seconds()"
    if pd.api.types.is_datetime64_any_dtype(s):
        return ("encode the times as numbers, e.g. (df[col] - df[col].min()).dt.total_seconds(), "
                "or a part of them (df[col].dt.hour) as a categorical confounder")
    if isinstance(s.dtype, pd.CategoricalDtype):
        return ("a categorical confounder goes in categorical=[...]; numeric categories "
                "convert with df[col].astype(float)")
    try:
        numbers = pd.to_numeric(s.dropna(), errors="coerce")
    except (TypeError, ValueError):  # cells pandas cannot even try (lists, dicts)
        return "it holds values that are not numbers"
    if numbers.notna().all():  # numbers stored as text or Python objects (e.g. Decimal)
        return "it holds numbers as text or objects: convert it, e.g. df[col] = pd.to_numeric(df[col])"
    bad = s.dropna()[numbers.isna().to_numpy()]
    return (f"it holds {len(bad)} values that are not numbers, e.g. {bad.iloc[0]!r} (row "
            f"{bad.index[0]!r}); fix or drop them, or pass a categorical column in categorical=[...]")
