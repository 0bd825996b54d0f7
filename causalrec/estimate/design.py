"""From a validated log to tensors: confounder matrix, segment ids, cross-fitting folds."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..schema import InteractionLog
from ..glm.layout import read_only_tensor

__all__ = ["Design", "build_design", "segment_ids", "assign_folds", "row_hash"]


@dataclass
class Design:
    """Confounder matrix (no intercept, C order) and its column names. With
    ``standardised=False`` X holds raw values and ``(X - center) * scale`` is the standardised
    matrix: the estimator applies that while it pads rows into blocks, which spares a full
    copy of X."""

    X: np.ndarray
    columns: list[str]
    dropped: list[str]
    center: np.ndarray
    scale: np.ndarray
    standardised: bool = True


def build_design(log: InteractionLog, extra: pd.DataFrame | None = None,
                 max_levels: int = 50, dtype=np.float32, standardise: bool = True,
                 contiguous: bool = True) -> Design:
    """Numeric confounders, one-hot categoricals and ``extra`` columns (e.g. text components),
    each standardised; constant columns are dropped (they carry no information).

    ``contiguous=False`` (with ``standardise=False``) may return X in a frame's column-major
    order: a GPU consumer copies it as is and reorders it on the device, which spares the host
    a transposing copy of the whole matrix.
    """
    df = log.data
    parts, names = [], []
    if log.confounders:
        parts.append(df[log.confounders].to_numpy(dtype=dtype))
        names += log.confounders
    for col in log.categorical:
        onehot, levels = _one_hot(df[col], max_levels)
        parts.append(onehot[:, 1:].astype(dtype))  # reference coding: no column collinear with the intercept
        names += [f"{col}={level}" for level in levels[1:]]
    if extra is not None and extra.shape[1]:
        parts.append(extra.to_numpy(dtype=dtype))
        names += list(extra.columns)
    if not parts:
        empty = np.zeros(0)
        return Design(np.zeros((len(df), 0), dtype=dtype), [], [], empty, empty, standardise)
    X = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    # rows are gathered into blocks later: C order (a frame's single block is column-major)
    contiguous = contiguous or standardise
    owned = len(parts) > 1 or not X.flags.c_contiguous
    if contiguous:
        X = np.ascontiguousarray(X)
    mean, std = _moments(X)
    keep = std > 1e-12 * np.maximum(1.0, np.abs(mean))
    if not keep.all():  # (column selection can return column-major order)
        X, owned = X[:, keep], True
        X = np.ascontiguousarray(X) if contiguous else X
    center, scale = mean[keep], 1.0 / std[keep]
    if standardise:
        X = X if owned and X.flags.writeable else X.copy()
        for a in range(0, len(X), _ROWS):
            X[a:a + _ROWS] -= center.astype(dtype)
            X[a:a + _ROWS] *= scale.astype(dtype)
    return Design(X, [n for n, k in zip(names, keep) if k], [n for n, k in zip(names, keep) if not k],
                  center, scale, standardise)


_ROWS = 65536  # rows per chunk: a few MB, cache-sized


def _moments(X: np.ndarray):
    """Column means and standard deviations: two passes over cache-sized row chunks (no
    centred copy of X), chunk sums in X's precision accumulated in float64."""
    X = read_only_tensor(X)
    total = torch.zeros(X.shape[1], dtype=torch.float64)
    for a in range(0, len(X), _ROWS):
        total += X[a:a + _ROWS].sum(0)
    mean = total / max(len(X), 1)
    squares = torch.zeros_like(total)
    buf = X.new_empty((min(_ROWS, len(X)), X.shape[1]))
    for a in range(0, len(X), _ROWS):
        chunk = X[a:a + _ROWS]
        squares += torch.sub(chunk, mean.to(X.dtype), out=buf[:len(chunk)]).square_().sum(0)
    return mean.numpy(), (squares / max(len(X), 1)).sqrt().numpy()


def _one_hot(values: pd.Series, max_levels: int):
    """One column per level (sorted); levels beyond the ``max_levels`` most frequent pool
    into ``__other__``. Missing values are a level of their own."""
    values = values.astype(object).where(values.notna(), "__missing__").astype(str)
    counts = values.value_counts()
    if len(counts) > max_levels:
        values = values.where(values.isin(counts.index[:max_levels - 1]), "__other__")
    codes, levels = pd.factorize(values, sort=True)
    onehot = np.zeros((len(values), len(levels)))
    onehot[np.arange(len(values)), codes] = 1.0
    return onehot, list(levels)


def segment_ids(df: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Dense segment id per row (sorted by key values) and the key table per segment."""
    if len(keys) == 1:
        codes, uniques = pd.factorize(df[keys[0]], sort=True)
        return codes.astype(np.int64), pd.DataFrame({keys[0]: uniques})
    index = pd.MultiIndex.from_frame(df[keys])
    codes, uniques = index.factorize(sort=True)
    frame = uniques.to_frame(index=False)
    frame.columns = keys
    return codes.astype(np.int64), frame


# ---- 64-bit hashing with in-place torch int64 ops: int64 arithmetic wraps like uint64, so
# only the right shifts need a mask to be logical. Row hashes equal
# pandas.util.hash_pandas_object(df, index=False) bit for bit, computed in cache-sized row
# chunks (2-3x faster on numeric columns).
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


def row_hash(df: pd.DataFrame, chunk_rows: int = 1 << 18) -> np.ndarray:
    """uint64 hash of each row's values; equals ``pd.util.hash_pandas_object(df, index=False)``."""
    columns = []  # (values, already hashed)
    for _, col in df.items():
        if _is_plain_numeric(col.dtype):
            columns.append((col.to_numpy(), False))
        else:  # strings, categoricals, extension types: pandas' own per-column hash
            columns.append((pd.util.hash_pandas_object(col, index=False).to_numpy().view(np.int64).copy(), True))
    out = np.empty(len(df), dtype=np.uint64)
    for start in range(0, len(df), chunk_rows):
        stop = min(start + chunk_rows, len(df))
        acc = torch.full((stop - start,), 0x345678, dtype=torch.int64)
        tmp = torch.empty_like(acc)
        mult = 1000003
        for i, (values, hashed) in enumerate(columns):
            part = torch.from_numpy(values[start:stop] if hashed else _column_bits(values[start:stop]))
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


def assign_folds(df: pd.DataFrame, content: list[str], segment: np.ndarray, treatment: np.ndarray,
                 outcome: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Cross-fitting folds stratified by segment and treatment arm.

    Within each (segment, arm) stratum rows are ordered by a seeded hash of their content (the
    confounder and item columns, then the outcome), and dealt round-robin into folds from a
    per-segment offset. The assignment therefore does not depend on row order, and swapping
    the treatment labels keeps every row in its fold.
    """
    if n_folds == 1:
        return np.zeros(len(df), dtype=np.int64)
    key = _mix(row_hash(df[content]) ^ _mix(np.full(1, seed, dtype=np.uint64)))
    stratum = segment * 2 + treatment
    order = _stratum_order(stratum, key, outcome)
    sorted_stratum = stratum[order]
    starts = np.flatnonzero(np.r_[True, sorted_stratum[1:] != sorted_stratum[:-1]])
    lengths = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, lengths)
    offset = _mix(segment[order].astype(np.uint64) + _mix(np.full(1, seed + 1, dtype=np.uint64)))
    folds = np.empty(len(df), dtype=np.int64)
    folds[order] = (rank + (offset % np.uint64(n_folds)).astype(np.int64)) % n_folds
    return folds
