"""Seeded 64-bit row hashes for the cross-fitting folds (``folds.py``): pandas' row hash bit
for bit, a canonical (dtype-free) variant, and the name-free content key. The hot loops run
over cache-sized chunks into reused buffers: a pass over a fresh multi-MB array page-faults
and streams memory, and a fold assignment makes about ten passes per confounder column."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .tensors import read_only_tensor

__all__ = ["content_column_order", "row_hash", "stream_uniforms"]


# ``row_hash`` equals pandas.util.hash_pandas_object(df, index=False) bit for bit (or, with
# ``canonical=True``, hashes numbers by value whatever their dtype), computed in cache-sized
# row chunks with in-place torch int64 ops: int64 arithmetic wraps like uint64, so only the
# right shifts need a mask to be logical (numpy's uint64 ufuncs elsewhere need none).
def _as_int64(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


# elements per chunk of the hashing passes: 256 KB of uint64, so a column's dozen steps run
# in cache instead of streaming (and, for fresh arrays, page-faulting) the whole column each
CHUNK = 1 << 15
_MULTIPLIERS = ((30, np.uint64(0xBF58476D1CE4E5B9)), (27, np.uint64(0x94D049BB133111EB)),
                (31, None))


def _mix_into(x: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on uint64 (wrapping products, logical shifts)."""
    for shift, mult in _MULTIPLIERS:
        np.right_shift(x, np.uint64(shift), out=tmp)
        x ^= tmp
        if mult is not None:
            np.multiply(x, mult, out=x)
    return x


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of uint64 keys (a new array)."""
    out = np.ascontiguousarray(h, dtype=np.uint64).copy()
    tmp = np.empty(min(len(out), CHUNK), dtype=np.uint64)
    for a in range(0, len(out), CHUNK):
        part = out[a:a + CHUNK]
        _mix_into(part, tmp[:len(part)])
    return out


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


def _seed_bits(seed: int) -> np.ndarray:
    return _mix(np.full(1, seed, dtype=np.uint64))


def _value_bits(col: pd.Series) -> np.ndarray:
    """uint64 image of each value of a column, numbers by value whatever their dtype (not
    yet mixed for numbers: ``_value_hashes`` mixes them)."""
    if col.dtype == object:  # its numbers as a numeric column's
        return _canonical_object_hash(col, mixed=False).view(np.uint64)
    values, hashed = _column_entry(col, canonical=True)
    return (values if hashed else _canonical_bits(values)).view(np.uint64)


def _value_hashes(col: pd.Series) -> np.ndarray:
    """uint64 hash of each value of a column, numbers by value whatever their dtype."""
    return _mix(_value_bits(col))


def _value_bits_into(col: pd.Series, out: np.ndarray) -> np.ndarray:
    """``_value_bits`` of a column (uint64), a float column's written chunk by chunk into
    ``out`` (the same values: ``_canonical_bits`` of each chunk)."""
    if not (isinstance(col.dtype, np.dtype) and col.dtype in (np.float32, np.float64)):
        return _value_bits(col)
    values = col.to_numpy()
    for a in range(0, len(values), CHUNK):
        out[a:a + CHUNK] = _float_bits(values[a:a + CHUNK]).view(np.uint64)
    return out


def _float_bits(v: np.ndarray) -> np.ndarray:
    """``_canonical_bits`` of floats in fewer passes when no value equals its rounding (no
    integral or infinite value: the usual continuous column); else that function."""
    if (v == np.round(v)).any():
        return _canonical_bits(v)
    bits = v.astype(np.float64).view(np.int64)
    nan = np.isnan(v)
    if nan.any():
        bits[nan] = np.array(np.nan).view(np.int64)
    return bits


def _content_hash(df: pd.DataFrame, columns: list[str], segment: np.ndarray) -> np.ndarray:
    """The seed-free part of ``_content_key``: the sum over the columns of each value's
    image salted by its column's signature in the row's segment, mixed (see there)."""
    segment = np.asarray(segment, dtype=np.int64)
    n, n_segments = len(segment), int(segment.max()) + 1 if len(segment) else 0
    seg = torch.from_numpy(segment)
    acc, buffer = np.zeros(n, dtype=np.uint64), np.empty(n, dtype=np.uint64)
    x, tmp = (np.empty(min(n, CHUNK), dtype=np.uint64) for _ in range(2))
    for column in dict.fromkeys(columns):
        bits = _value_bits_into(df[column], buffer)
        # int64 sums wrap like uint64 ones: exact, whatever the order of the rows
        signature = torch.zeros(n_segments, dtype=torch.int64).index_add_(
            0, seg, read_only_tensor(bits.view(np.int64)))
        salt = _mix(signature.numpy().view(np.uint64))
        for a in range(0, n, CHUNK):
            part = np.take(salt, segment[a:a + CHUNK], out=x[:len(segment[a:a + CHUNK])],
                           mode="clip")  # (valid ids; "raise" buffers)
            part ^= bits[a:a + CHUNK]
            acc[a:a + CHUNK] += _mix_into(part, tmp[:len(part)])
    return acc


def _content_key(df: pd.DataFrame, columns: list[str], segment: np.ndarray, seed: int) -> np.ndarray:
    """Seeded hash of each row's values in ``columns`` that depends neither on the columns'
    names nor on their order. A column enters through its values only: each value is salted
    by the column's signature in the row's segment (the wrapping sum of the column's value
    images over the segment's rows: name-free, row-order free, and local to the segment, so
    shards agree) and mixed, and the results are summed over the columns. Two columns with
    the same values in a segment (up to row order) are exchangeable, so rows that swap
    values between such columns share a key (and a fold): the price of names not
    mattering, counted exactly where duplicates are counted."""
    return _mix(_content_hash(df, columns, segment) ^ _seed_bits(seed))


def content_column_order(X: np.ndarray, chunk_rows: int = 1 << 16) -> np.ndarray:
    """An order of X's columns set by their content alone (not by names, positions or row
    order), for learners whose results depend on column order (XGBoost breaks ties between
    equally good splits by column index). Values are read as float32, so float32 and float64
    copies agree. A column's signature is the wrapping sums of its values' bit patterns and
    of their squares (no hashing: one cheap pass); columns with equal signatures (the same
    values in another arrangement, e.g. two binary columns with as many ones) are told apart
    by a sum that hashes each value with its row's content. Identical columns stay tied:
    either order gives the same matrix. -> a permutation of range(X.shape[1])."""
    n, d = X.shape
    if d < 2:
        return np.arange(d)
    chunks = [(a, min(a + chunk_rows, n)) for a in range(0, n, chunk_rows)]

    def bits(a, b):  # the chunk's float32 bit patterns (+0.0 for -0.0), as uint64
        v = np.asarray(X[a:b], np.float32) + np.float32(0.0)
        return v.view(np.uint32).astype(np.uint64)

    total, squares = np.zeros(d, np.uint64), np.zeros(d, np.uint64)
    for a, b in chunks:
        h = bits(a, b)
        total += h.sum(0, dtype=np.uint64)
        squares += (h * h).sum(0, dtype=np.uint64)
    _, group = np.unique(np.c_[total, squares], axis=0, return_inverse=True)
    tied = np.bincount(group.ravel(), minlength=d)[group.ravel()] > 1
    second = np.zeros(d, np.uint64)
    if tied.any():  # rare: hash each tied column's values with its rows' content
        salt = _mix(total ^ _mix(squares))
        for a, b in chunks:
            h = _mix(bits(a, b).ravel()).reshape(b - a, d)
            row = _mix((h ^ salt).ravel()).reshape(h.shape).sum(1, dtype=np.uint64)
            second[tied] += _mix((h[:, tied] ^ row[:, None]).ravel()).reshape(
                b - a, int(tied.sum())).sum(0, dtype=np.uint64)
    return np.lexsort((second, squares, total))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment


def stream_uniforms(keys, seed: int, start: int, count: int, stream: int = 0) -> np.ndarray:
    """Uniforms in (0, 1), shape ``(len(keys), count)``: draws ``start .. start + count - 1``
    of one SplitMix64 stream per uint64 key, seeded by the key, ``seed`` and ``stream`` (a
    purpose tag). A key's draws depend on nothing else: not on the other keys, their order,
    nor how the draws are split into batches (``rank_items`` keys items by ``row_hash``)."""
    keys = np.asarray(keys, dtype=np.uint64)
    state = _mix(_mix(keys ^ _seed_bits(seed)) ^ _seed_bits(stream))
    counter = np.arange(start + 1, start + count + 1, dtype=np.uint64) * _GOLDEN
    bits = _mix((state[:, None] + counter[None, :]).ravel()).reshape(keys.size, count)
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
