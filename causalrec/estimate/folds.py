"""Cross-fitting folds from a seeded hash of each row's content: canonical (column order and
int / float / bool spelling do not matter), row-order free, duplicates kept in one fold, and an
item's folds depend only on its own rows (so a shard computes its items' folds alone)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from ..exceptions import DataWarning
from .params import MAX_FOLDS

__all__ = ["MAX_FOLDS", "assign_folds", "check_folds", "check_n_folds", "narrow_codes", "row_hash"]



# ---- 64-bit hashing with in-place torch int64 ops: int64 arithmetic wraps like uint64, so
# only the right shifts need a mask to be logical. ``row_hash`` equals
# pandas.util.hash_pandas_object(df, index=False) bit for bit (or, with ``canonical=True``,
# hashes numbers by value whatever their dtype), computed in cache-sized row chunks.
def _as_int64(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of uint64 keys (a new array)."""
    x = torch.from_numpy(np.ascontiguousarray(h, dtype=np.uint64).view(np.int64).copy())
    return _mix_inplace(x, torch.empty_like(x)).numpy().view(np.uint64)


def _mix_inplace(x: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser (the mixing step pandas' hashing uses too), in place on int64."""
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None)):
        torch.bitwise_right_shift(x, shift, out=tmp)
        tmp &= (1 << (64 - shift)) - 1
        x ^= tmp
        if mult is not None:
            x *= _as_int64(mult)
    return x


def _is_plain_numeric(dtype) -> bool:
    return isinstance(dtype, np.dtype) and (dtype == bool or dtype.kind in "iuf")


def _column_bits(values: np.ndarray) -> np.ndarray:
    """pandas' pre-mix uint64 image of a numeric numpy column, as int64."""
    dtype = values.dtype
    if dtype == bool:
        return values.astype(np.int64)
    width = f"u{dtype.itemsize}"
    bits = values.view(width).astype(np.uint64)
    if dtype.kind == "f":  # pandas hashes every NaN alike and -0.0 as 0.0
        bits[np.isnan(values)] = np.array(np.nan, dtype=dtype).view(width)
        bits[bits == np.array(-0.0, dtype=dtype).view(width)] = 0
    return bits.view(np.int64)


def _canonical_bits(values: np.ndarray) -> np.ndarray:
    """A dtype-free image of numbers: integral values as their int64 (so 3, 3.0, True and
    np.int8(3) agree), other floats as float64 bits (every NaN alike)."""
    if values.dtype == bool or values.dtype.kind in "iu":
        return values.astype(np.int64)
    v = values.astype(np.float64)
    with np.errstate(invalid="ignore"):
        integral = np.isfinite(v) & (np.abs(v) < 2.0 ** 63) & (v == np.round(v))
    bits = v.view(np.int64).copy()
    bits[np.isnan(v)] = np.array(np.nan).view(np.int64)
    bits[integral] = v[integral].astype(np.int64)
    return bits


def _canonical_object_hash(col: pd.Series) -> np.ndarray:
    """Hashes of a mixed column: numbers as in a numeric column, anything else as pandas."""
    hashed = pd.util.hash_pandas_object(col, index=False).to_numpy().view(np.int64).copy()
    values = col.to_numpy()
    numeric = np.array([isinstance(v, (int, float, np.number)) for v in values], dtype=bool)
    if numeric.any():
        bits = _canonical_bits(values[numeric].astype(np.float64))
        hashed[numeric] = _mix(bits.view(np.uint64)).view(np.int64)
    return hashed


def row_hash(df, chunk_rows: int = 1 << 18, canonical: bool = False) -> np.ndarray:
    """uint64 hash of each row's values; equals ``pd.util.hash_pandas_object(df, index=False)``.
    ``canonical=True`` hashes numbers by value (see ``_canonical_bits``), so a column's dtype
    does not matter; column order still does (``assign_folds`` sorts the columns). ``df`` is a
    DataFrame or a dict of its columns (``df[list]`` would copy every column)."""
    columns, bits_of = [], _canonical_bits if canonical else _column_bits  # (values, hashed)
    n_rows = len(df) if isinstance(df, pd.DataFrame) else len(next(iter(df.values()), ()))
    for _, col in df.items():
        if _is_plain_numeric(col.dtype):
            columns.append((col.to_numpy(), False))
        elif canonical and (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)) \
                and not isinstance(col.dtype, pd.CategoricalDtype):
            columns.append((col.to_numpy(dtype=np.float64, na_value=np.nan), False))
        elif canonical and col.dtype == object:
            columns.append((_canonical_object_hash(col), True))
        else:  # strings, categoricals, extension types: pandas' own per-column hash
            columns.append((pd.util.hash_pandas_object(col, index=False).to_numpy().view(np.int64).copy(), True))
    out = np.empty(n_rows, dtype=np.uint64)
    for start in range(0, n_rows, chunk_rows):
        stop = min(start + chunk_rows, n_rows)
        acc = torch.full((stop - start,), 0x345678, dtype=torch.int64)
        tmp = torch.empty_like(acc)
        mult = 1000003
        for i, (values, hashed) in enumerate(columns):
            part = torch.from_numpy(values[start:stop] if hashed else bits_of(values[start:stop]))
            acc ^= part if hashed else _mix_inplace(part, tmp)
            acc *= _as_int64(mult)
            mult = (mult + 82520 + 2 * (len(columns) - i)) % (1 << 64)
        acc += 97531
        out[start:stop] = acc.numpy().view(np.uint64)
    return out


def _stratum_order(stratum: np.ndarray, key: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    """``np.lexsort((outcome, key, stratum))``, by one torch sort of the stratum in the high
    bits and the key's leading bits below it (several times faster); equal packed values
    (duplicated rows, or keys that agree in their leading bits) fall back to the lexsort."""
    n_bits = max(int(stratum.max()).bit_length() if len(stratum) else 0, 1)
    packed = torch.from_numpy(stratum.astype(np.int64)) << (63 - n_bits)
    packed |= torch.from_numpy((key >> np.uint64(n_bits + 1)).view(np.int64))
    values, order = torch.sort(packed)
    if bool((values[1:] == values[:-1]).any()):
        return np.lexsort((outcome, key, stratum))
    return order.numpy()


def _content_key(df: pd.DataFrame, columns: list[str], seed: int) -> np.ndarray:
    """Seeded canonical hash of the named columns, taken in sorted name order."""
    columns = sorted(dict.fromkeys(columns), key=str)
    if not columns:
        return _mix(np.full(len(df), seed, dtype=np.uint64))
    hashed = row_hash({c: df[c] for c in columns}, canonical=True)
    return _mix(hashed ^ _mix(np.full(1, seed, dtype=np.uint64)))


def check_n_folds(n_folds) -> int:
    if not (isinstance(n_folds, (int, np.integer)) and not isinstance(n_folds, bool)
            and 1 <= n_folds <= MAX_FOLDS):
        raise ValueError(f"n_folds must be an integer in [1, {MAX_FOLDS}], got {n_folds!r}")
    return int(n_folds)


def assign_folds(df: pd.DataFrame, content: list[str], segment: np.ndarray, treatment: np.ndarray,
                 outcome: np.ndarray, n_folds: int, seed: int,
                 item_columns: list[str] | None = None, warn_duplicates: bool = True) -> np.ndarray:
    """Cross-fitting folds stratified by segment and treatment arm.

    Within each (segment, arm) stratum the distinct row contents (the ``content`` columns in
    name order, numbers by value whatever their dtype) are ordered by a seeded hash and
    dealt round-robin into folds from a per-segment offset; rows with the same content share
    a fold, so duplicated rows never straddle folds (a ``DataWarning`` counts the exact
    duplicates, outcome included, unless ``warn_duplicates`` is False: later splits of the
    same rows have the same duplicates). The outcome plays no part, so shifting or scaling it
    keeps every fold. The assignment therefore depends neither on row order nor on column order
    or dtypes, and swapping the treatment labels keeps every row in its fold. The offset
    comes from a hash of the ``item_columns`` values when given (an item's folds then do not
    depend on which other items are in the log), else from the segment id. Cost: one hash
    and one sort of the rows, whatever ``n_folds``.
    """
    n_folds = check_n_folds(n_folds)
    if n_folds == 1:
        return np.zeros(len(df), dtype=np.int64)
    outcome = np.asarray(outcome, dtype=np.float64)
    key = _content_key(df, content, seed)
    stratum = np.asarray(segment, dtype=np.int64) * 2 + treatment  # narrow ids: no overflow
    order = _stratum_order(stratum, key, outcome)
    sorted_stratum, sorted_key, sorted_y = stratum[order], key[order], outcome[order]
    new_stratum = np.r_[True, sorted_stratum[1:] != sorted_stratum[:-1]]
    new_content = new_stratum | np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    group = np.cumsum(new_content) - 1  # one rank per distinct content within a stratum
    starts = np.flatnonzero(new_stratum)
    rank = group - np.repeat(group[starts], np.diff(np.r_[starts, len(order)]))
    # equal content sorts by outcome: exact duplicates are neighbours
    n_duplicates = int(len(order) - (new_content | np.r_[True, sorted_y[1:] != sorted_y[:-1]]).sum())
    if n_duplicates and warn_duplicates:
        warnings.warn(f"{n_duplicates} rows repeat another row exactly (same item, confounders, "
                      "treatment and outcome); each set of duplicates is kept in one "
                      "cross-fitting fold", DataWarning, stacklevel=2)
    if item_columns:
        base = _content_key(df, item_columns, seed + 1)[order]
    else:
        base = segment[order].astype(np.uint64) + _mix(np.full(1, seed + 1, dtype=np.uint64))
    offset = _mix(base)
    folds = np.empty(len(df), dtype=np.int64)
    folds[order] = (rank + (offset % np.uint64(n_folds)).astype(np.int64)) % n_folds
    return folds


def check_folds(folds, n_rows, n_folds) -> np.ndarray:
    """Given folds: one integer in [0, n_folds) per row (ValueError otherwise), as int64."""
    folds = np.asarray(folds)
    if folds.shape != (n_rows,) or not np.issubdtype(folds.dtype, np.integer):
        raise ValueError(f"folds must be {n_rows} integers (one per row), got shape "
                         f"{folds.shape} and dtype {folds.dtype}")
    if len(folds) and (folds.min() < 0 or folds.max() >= n_folds):
        raise ValueError(f"folds must lie in [0, {n_folds}), found {folds.min()}..{folds.max()}")
    return folds.astype(np.int64)


def narrow_codes(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Integer codes in [0, n_codes) as int8 / int32 when they fit (a 10M-row log: 10 MB of
    folds and 40 MB of item ids instead of 80 MB each); arithmetic on them casts to int64."""
    for kind in (np.int8, np.int32):
        if n_codes <= np.iinfo(kind).max:
            return codes.astype(kind, copy=False)
    return codes
