"""Row and value hashes for seeded, reproducible splits (cross-fitting folds, held-out rows).

Below ``causalrec.estimate`` and ``causalrec.nuisance``, which both draw their splits from
these hashes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

__all__ = ["row_hash"]


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


def _canonical_object_hash(col: pd.Series, mixed: bool = True) -> np.ndarray:
    """Hashes of a mixed column: numbers as in a numeric column (their canonical bits, mixed
    unless ``mixed`` is False), anything else as pandas."""
    hashed = pd.util.hash_pandas_object(col, index=False).to_numpy().view(np.int64).copy()
    values = col.to_numpy()
    numeric = np.array([isinstance(v, (int, float, np.number)) for v in values], dtype=bool)
    if numeric.any():
        bits = _canonical_bits(values[numeric].astype(np.float64))
        hashed[numeric] = _mix(bits.view(np.uint64)).view(np.int64) if mixed else bits
    return hashed


def _column_entry(col: pd.Series, canonical: bool):
    """(values, hashed): a numeric column's values (``hashed`` False: their bits are mixed
    later, chunk by chunk) or an int64 hash per value (``hashed`` True)."""
    if _is_plain_numeric(col.dtype):
        return col.to_numpy(), False
    if canonical and (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)) \
            and not isinstance(col.dtype, pd.CategoricalDtype):
        return col.to_numpy(dtype=np.float64, na_value=np.nan), False
    if canonical and col.dtype == object:
        return _canonical_object_hash(col), True
    # strings, categoricals, extension types: pandas' own per-column hash
    return pd.util.hash_pandas_object(col, index=False).to_numpy().view(np.int64).copy(), True


def row_hash(df, chunk_rows: int = 1 << 18, canonical: bool = False) -> np.ndarray:
    """uint64 hash of each row's values; equals ``pd.util.hash_pandas_object(df, index=False)``.
    ``canonical=True`` hashes numbers by value (see ``_canonical_bits``), so a column's dtype
    does not matter; column order still does (``assign_folds`` uses ``_content_key``, which
    is free of it). ``df`` is a DataFrame or a dict of its columns (``df[list]`` would copy
    every column)."""
    bits_of = _canonical_bits if canonical else _column_bits
    n_rows = len(df) if isinstance(df, pd.DataFrame) else len(next(iter(df.values()), ()))
    columns = [_column_entry(col, canonical) for _, col in df.items()]  # (values, hashed)
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
