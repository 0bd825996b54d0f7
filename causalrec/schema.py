"""Column roles of a logged-interaction table, validated once.

A log has one row per (user, item, context) opportunity: a binary treatment (the item was
recommended or exposed), an outcome, and the columns that confound the two.
"""
from __future__ import annotations

import numbers
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


# compression suffixes pandas and the standard library can undo (zst: the zstandard package)
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd",
                ".zip": "zip"}
_FORMATS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".parquet": None, ".pq": None}


def read_log(path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a log from CSV, TSV or Parquet, chosen by the file suffixes: the format suffix may
    be followed by a compression suffix (``.csv.gz``, ``.tsv.zst``, ``.parquet.gz``, ... of
    ``COMPRESSIONS``); a bare ``.gz`` is a compressed CSV. ``encoding`` is the text encoding
    of a CSV / TSV (e.g. "latin-1", "cp1252")."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such log file: {path}")
    fmt, compression = _log_format(path)
    if _FORMATS[fmt] is None:
        return _read_parquet(path, compression)
    try:
        return pd.read_csv(path, sep=_FORMATS[fmt], encoding=encoding, compression=compression)
    except UnicodeDecodeError as exc:
        raise SchemaError(None, f"cannot read {path}: it is not {encoding} text ({exc.reason} "
                          f"at byte {exc.start}); pass its encoding, e.g. "
                          "encoding='latin-1' (--encoding on the command line)") from None
    except LookupError:
        raise ValueError(f"unknown text encoding {encoding!r} for {path}") from None
    except (OSError, EOFError) as exc:  # bad gzip / zstd stream: a wrong suffix or a cut file
        raise SchemaError(None, f"cannot read {path} as {compression or 'uncompressed'} "
                          f"{fmt[1:]}: {exc}") from None


def _log_format(path: Path) -> tuple[str, str | None]:
    """(format suffix, pandas compression name or None) from all of the file's suffixes."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    fmt = suffixes[-2] if compression and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if compression and fmt not in _FORMATS and not fmt[1:].isalpha():
        fmt = ".csv"  # "log.gz", "log.2024.gz": a compressed CSV, as before ("x.json.gz" is not)
    if fmt not in _FORMATS:
        raise SchemaError(None, f"cannot read {path.name}: expected a .csv or .parquet file (or "
                          f".tsv), optionally compressed ({', '.join(COMPRESSIONS)})")
    if compression == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise SchemaError(None, f"cannot read {path.name}: .zst files need the zstandard "
                              "package (pip install zstandard)") from None
    return fmt, compression


def _read_parquet(path: Path, compression: str | None) -> pd.DataFrame:
    if compression is None:
        return pd.read_parquet(path)
    import io

    from pandas.io.common import get_handle  # pandas' own decompressors, as read_csv uses
    try:
        with get_handle(path, "rb", compression=compression, is_text=False) as handle:
            data = handle.handle.read()
        return pd.read_parquet(io.BytesIO(data))
    except (OSError, EOFError, ValueError) as exc:
        raise SchemaError(None, f"cannot read {path} as {compression}-compressed parquet: {exc}") from None


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
    if isinstance(value, str) or np.isscalar(value):
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
    unit : the unit a row belongs to (user or session id: any hashable values, no missing
        ones; may be the ``user`` column): all of a unit's rows share one cross-fitting fold,
        so a unit seen under many items never sits on both sides of a split.
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
            "unit": _as_list(self.unit),
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
                    raise SchemaError(col, f"given two roles: {seen[col]!r} and {role!r}")
                seen.setdefault(col, role)
                if col not in df.columns:
                    raise SchemaError(col, f"missing from the log (role {role!r})"
                                           + did_you_mean(col, df.columns))
        check_unique_columns(df, [c for cols in self.roles.values() for c in cols], "the log")
        for col in self.item_columns:
            _check_no_missing(df[col], col)
        for col in (self.item_columns + self.categorical + _as_list(self.group)
                    + _as_list(self.user) + _as_list(self.unit)):
            check_key_values(df[col], col)
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
        if self.unit is not None:
            _check_no_missing(df[self.unit], self.unit)

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
