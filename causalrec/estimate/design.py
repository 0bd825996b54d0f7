"""From a validated log to the confounder matrix and segment ids (folds: ``folds.py``).

``DesignSpec`` holds the facts about the design that need the whole log (column moments,
dropped columns, categorical levels, the 0/1 outcome check). It is computed once, from the
rows that are fitted, and applied to the whole frame or to any shard of its rows alike.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..exceptions import DataWarning
from ..schema import InteractionLog, SchemaError
from ..utils.levels import frequency_order, reference_first
from .design_rows import DesignRows
from .missing_values import MISSING, _filled, fill_of, indicator_name
from .precision import SAMPLE, warn_float32_precision

__all__ = ["Design", "DesignRows", "DesignSpec", "build_design", "indicator_name", "segment_ids"]

OTHER = "__other__"  # pooled categorical levels (MISSING: missing_values.py)
_TAIL = 0.01  # share of rows winsorised at each end for the robust moments
_INFLATION = 2.0  # plain std above this multiple of the winsorised one: outliers, use robust
# a categorical confounder whose levels pooled into ``__other__`` hold this share of the rows
# draws a warning: the fit cannot tell those levels apart (a 5,000-level city confounding
# both arms: 4,930 levels, 85% of rows, pooled; coverage 0.17, mean z +3.0)
POOLED_WARN_SHARE = 0.05


@dataclass
class Design:
    """Confounder matrix (no intercept, C order) and its column names. With
    ``standardised=False`` X holds raw values (times ``2 ** exponent``, see ``DesignSpec``)
    and ``(X - center) * scale`` is the standardised matrix."""

    X: np.ndarray
    columns: list[str]
    dropped: list[str]
    center: np.ndarray
    scale: np.ndarray
    standardised: bool = True
    exponent: np.ndarray | None = None


@dataclass
class DesignSpec:
    """Everything needed to turn rows of a log into design rows, independently of which other
    rows are present (picklable: plain Python and numpy fields).

    confounders, extra : numeric source columns (``extra``: e.g. text components, passed
        separately to ``transform``); categorical : column -> its levels, reference first;
        rows with a level not in the list (rare, or unseen) count as ``__other__`` when that
        level exists, else as the reference.
    columns, center, scale : the kept output columns and their float64 moments.
    dropped : dropped column -> why (constant, not finite, a single level).
    pooled_levels : categorical column -> number of its levels pooled into ``__other__``.
    outcome_binary : the outcome is 0/1 on the fitted rows.
    n_rows : rows the moments came from.
    exponent : per kept column, a power of two its values are multiplied by (exactly) before
        ``center`` and ``scale`` apply: 0, except for a column whose spread is so small
        (subnormal) that 1 / its std overflows; such a column is rescaled, not dropped.
    fill : numeric confounder -> the value its missing entries take (the log's
        ``missing="indicator"``; empty otherwise): its median over the observed fitted rows,
        an order statistic, so neither row order nor sharding moves it.
    indicators : the numeric confounders that have missing values on the fitted rows; each
        adds the 0/1 column ``indicator_name(col)`` right after its own (a confounder with
        none would add a constant column).
    """

    confounders: list[str]
    categorical: dict[str, list[str]]
    extra: list[str]
    columns: list[str]
    center: np.ndarray
    scale: np.ndarray
    dropped: dict[str, str] = field(default_factory=dict)
    pooled_levels: dict[str, int] = field(default_factory=dict)
    outcome_binary: bool | None = None
    n_rows: int = 0
    exponent: np.ndarray | None = None
    fill: dict[str, float] = field(default_factory=dict)
    indicators: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.exponent is None:
            self.exponent = np.zeros(len(self.columns), dtype=np.int64)

    def numeric(self, values: pd.Series, col: str) -> np.ndarray:
        """The numeric confounder ``col`` as the design reads it: its missing values filled
        (a copy only where there are some)."""
        v = _numeric_column(values)
        if col not in self.fill:
            return v
        missing = np.isnan(v)
        return _filled(v, missing, self.fill[col]) if missing.any() else v

    @staticmethod
    def is_missing(values: pd.Series) -> np.ndarray:
        """Where a numeric confounder is missing: its indicator column, as booleans."""
        return np.isnan(_numeric_column(values))

    @classmethod
    def from_log(cls, log: InteractionLog, extra: pd.DataFrame | None = None, rows=None,
                 max_levels: int = 50, min_level_count: int = 10, warn: bool = True,
                 dtype=None):
        """The spec of ``log`` (and ``extra`` columns aligned with its rows), from ``rows``
        (positions; None for all): moments are robust to a few extreme values and computed
        in float64; dropped columns raise a ``DataWarning`` naming them. With ``dtype``
        float32, a ``DataWarning`` also names the columns whose standardised values float32
        cannot hold (``precision.warn_float32_precision``)."""
        if not (isinstance(max_levels, (int, np.integer)) and max_levels >= 2):
            raise ValueError(f"max_levels must be an integer >= 2, got {max_levels!r}")
        if not (isinstance(min_level_count, (int, np.integer)) and min_level_count >= 1):
            raise ValueError(f"min_level_count must be a positive integer, got {min_level_count!r}")
        df = log.data
        take = (lambda v: v) if rows is None else (lambda v: v[rows])
        categorical, pooled, dropped, pooled_rows, fill, indicators = {}, {}, {}, {}, {}, []

        def sources():  # (output column, values), one column alive at a time
            for col in log.confounders:
                values = take(_numeric_column(df[col]))
                if log.missing != "indicator":
                    yield col, values
                    continue
                fill[col], missing = fill_of(values)
                yield col, _filled(values, missing, fill[col]) if missing.any() else values
                if missing.any():
                    indicators.append(col)
                    yield indicator_name(col), missing.astype(np.float64)
            for col in log.categorical:
                labels = take(_as_labels(df[col]))
                levels, n_pooled, rows_pooled = _levels(labels, max_levels, min_level_count)
                categorical[col] = levels
                if n_pooled:
                    pooled[col], pooled_rows[col] = n_pooled, rows_pooled
                if len(levels) < 2:
                    dropped[col] = "a single level on the fitted rows"
                codes = _level_codes(labels, levels)
                for k, level in enumerate(levels):
                    if k > 0:
                        yield f"{col}={level}", (codes == k).astype(np.float64)
            for col, name in zip([] if extra is None else extra.columns, extra_names):
                yield name, take(_numeric_column(extra[col]))

        extra_names = [] if extra is None else [str(c) for c in extra.columns]
        check = warn and dtype is not None and np.dtype(dtype) == np.float32
        moments, samples = [], []
        for name, values in sources():
            moments.append((name, _robust_moments(values)))
            center, inv_scale, problem, k = moments[-1][1]
            if check and not problem:  # a strided sample, as the design will read it
                sample = values[::max(1, len(values) // SAMPLE)]
                samples.append((name, np.ldexp(sample, k), center, inv_scale))
        if samples:
            warn_float32_precision(samples)
        y = take(df[log.outcome].to_numpy())
        binary = bool(np.isin(y, [0, 1]).all()) if len(y) else None
        return cls.from_moments(list(log.confounders), categorical, extra_names, moments,
                                dropped, pooled, binary, len(y), warn=warn,
                                pooled_rows=pooled_rows, fill=fill, indicators=indicators)

    @classmethod
    def from_moments(cls, confounders, categorical, extra, moments, dropped, pooled,
                     outcome_binary, n_rows, warn: bool = True, pooled_rows=None, fill=None,
                     indicators=()):
        """The spec from facts already computed (e.g. by a distributed aggregation):
        ``moments`` lists (output column, ``choose_moments``'s (center, 1 / scale, why dropped
        or None, exponent)) in output order; ``dropped`` holds the columns dropped before
        (single levels); ``pooled_rows``: categorical column -> rows of its pooled levels
        (a ``DataWarning`` where they are ``POOLED_WARN_SHARE`` of the rows or more);
        ``fill`` and ``indicators`` as the fields."""
        _check_unique_names([name for name, _ in moments])
        dropped = dict(dropped)
        columns, center, scale, exponent = [], [], [], []
        for name, (c, s, problem, k) in moments:
            if problem:
                dropped[name] = problem
            else:
                columns.append(name), center.append(c), scale.append(s), exponent.append(k)
        spec = cls(list(confounders), categorical, list(extra), columns,
                   np.array(center, dtype=np.float64), np.array(scale, dtype=np.float64),
                   dropped, dict(pooled), outcome_binary, n_rows,
                   np.array(exponent, dtype=np.int64), dict(fill or {}), list(indicators))
        if warn and dropped:
            warnings.warn("confounder columns dropped: " + "; ".join(
                f"{name!r} ({why})" for name, why in dropped.items()), DataWarning,
                stacklevel=4)
        shares = {col: rows / n_rows for col, rows in (pooled_rows or {}).items() if n_rows}
        blurred = {col: share for col, share in shares.items() if share >= POOLED_WARN_SHARE}
        if warn and blurred:
            warnings.warn("categorical confounders with levels pooled into '__other__' (the fit "
                          "does not tell those apart): " + "; ".join(
                              f"{col!r} ({pooled[col]} levels, {share:.0%} of rows)"
                              for col, share in blurred.items())
                          + "; if they confound, group the levels or encode them numerically",
                          DataWarning, stacklevel=4)
        return spec

    def transform(self, data, extra: pd.DataFrame | None = None, dtype=np.float32,
                  standardise: bool = True) -> Design:
        """Design rows of ``data`` (an InteractionLog or a frame with the spec's columns):
        each output row depends only on its input row, so shards concatenate to the whole."""
        X = self.rows(data, extra, dtype=dtype, standardise=standardise).fill()
        return Design(X, list(self.columns), list(self.dropped), self.center.copy(),
                      self.scale.copy(), standardise, self.exponent.copy())

    def rows(self, data, extra: pd.DataFrame | None = None, dtype=np.float32,
             standardise: bool = True) -> "DesignRows":
        """The design rows of ``data`` without forming them: ``DesignRows.gather_into`` writes
        any rows, e.g. straight into the GLM's padded layout (no (n, d) copy of the frame)."""
        df = data.data if isinstance(data, InteractionLog) else data
        if self.extra and (extra is None or len(extra) != len(df)):
            raise ValueError(f"this design needs the extra columns {self.extra} for every row")
        source = {}
        for col in self.confounders:
            source[col] = self.numeric(df[col], col)
        for col in self.indicators:  # a 0/1 column: the codes of "missing" (1) and not (0)
            source[indicator_name(col)] = (self.is_missing(df[col]), 1)
        for col, levels in self.categorical.items():
            codes = _level_codes(_as_labels(df[col]), levels)
            source.update({f"{col}={level}": (codes, k) for k, level in enumerate(levels) if k})
        for col, name in zip([] if extra is None else extra.columns, self.extra):
            source[name] = _numeric_column(extra[col])
        return DesignRows([source[name] for name in self.columns], self.center, self.scale,
                          len(df), np.dtype(dtype), standardise, self.exponent)


def build_design(log: InteractionLog, extra: pd.DataFrame | None = None,
                 max_levels: int = 50, dtype=np.float32, standardise: bool = True,
                 contiguous: bool = True, rows=None, min_level_count: int = 10) -> Design:
    """Numeric confounders, one-hot categoricals and ``extra`` columns (e.g. text components),
    each standardised with moments of ``rows`` (None: all rows); constant columns are dropped.
    The one code path of ``DesignSpec.from_log(...).transform(...)``; X is always C order
    (``contiguous`` is kept for callers)."""
    spec = DesignSpec.from_log(log, extra, rows=rows, max_levels=max_levels,
                               min_level_count=min_level_count)
    return spec.transform(log, extra, dtype=dtype, standardise=standardise)


def _check_unique_names(names: list[str]) -> None:
    """Design columns are found by name (``rows``): a confounder named like a column the
    design derives (``<categorical>=<level>``, ``<col>=__missing__``, ``<text>_pc<k>``) would
    silently take that column's values instead of its own."""
    seen = set()
    for name in names:
        if name in seen:
            raise SchemaError(name, "is the name of two design columns: a confounder is named "
                              "like a column causalrec derives (a categorical's level "
                              "'<column>=<level>', a missing-value indicator "
                              f"'<column>={MISSING}', a text component '<column>_pc<k>'); "
                              "rename the confounder, e.g. df.rename(columns={...})")
        seen.add(name)


def _numeric_column(values: pd.Series) -> np.ndarray:
    """A numeric column as numpy: float32 / float64 as they are (no copy), anything else as
    float64 (what the moments and the design compute in; a nullable column's NA as NaN)."""
    if isinstance(values.dtype, np.dtype) and values.dtype in (np.float32, np.float64):
        return values.to_numpy()
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _mean_std(v: np.ndarray, m: float) -> tuple[float, float]:
    """Mean and population std in float64 of values whose largest magnitude is m, scaled by
    it first (no overflow); one float64 temporary."""
    if m == 0 or not np.isfinite(m):
        return (0.0, 0.0) if m == 0 else (np.nan, np.nan)
    u = np.divide(v, m, dtype=np.float64)
    mean = u.mean()
    u -= mean
    np.square(u, out=u)
    return m * float(mean), m * float(np.sqrt(u.mean()))


def _order_statistics(v: np.ndarray, ranks: tuple[int, int], lo=None, hi=None) -> tuple:
    """The values of ``ranks`` (ascending, 0-based) in v, exactly, and the two tails that
    hold them (v's values up to / from a threshold, in v's order; None when the whole
    column was partitioned): a partition of only the values beyond thresholds taken from a
    strided sample (each tail holds ~1%), checked by counting; the whole column is
    partitioned when a threshold misses its rank. A tail whose threshold is v's minimum
    ``lo`` (maximum ``hi``) holds that value only: no partition (a binary or coarse column,
    whose tails are large)."""
    n, (k_low, k_high) = len(v), ranks
    sample = v[::max(1, n // SAMPLE)]
    s, p = len(sample), (k_low + 1) / n
    share = p + 6 * np.sqrt(p * (1 - p) / s) + 2 / s  # the tail's share plus ~6 sd
    if share < 0.25:
        j = int(share * s)
        t_low, t_high = np.partition(sample, (j, s - 1 - j))[[j, s - 1 - j]]
        # a threshold at the extreme: that value's count alone, its tail holds nothing beyond
        below = v[:0] if t_low == lo else v[v <= t_low]
        above = v[:0] if t_high == hi else v[v >= t_high]
        n_below = np.count_nonzero(v == lo) if t_low == lo else len(below)
        n_above = np.count_nonzero(v == hi) if t_high == hi else len(above)
        if n_below > k_low and n_above > n - 1 - k_high:
            low = t_low if t_low == lo else np.partition(below, k_low)[k_low]
            r = len(above) - (n - k_high)  # rank of the same value among the values above
            high = t_high if t_high == hi else np.partition(above, r)[r]
            return low, high, (below, above)
    low, high = np.partition(v, ranks)[list(ranks)]
    return low, high, None


def _robust_moments(v: np.ndarray) -> tuple[float, float, str | None, int]:
    """(center, 1 / scale, why dropped or None, exponent) of a column's values, see ``choose_moments``
    (float32 values are read as they are: their order statistics are exact, their moments
    are computed in float64)."""
    if len(v) == 0:
        return choose_moments(0, np.nan, np.nan, None, None)
    lo, hi = v.min(), v.max()
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo == hi:
        return choose_moments(len(v), lo, hi, None, None)
    ranks = tail_ranks(len(v))
    plain, winsorised = _mean_std(v, max(abs(lo), abs(hi))), None
    if ranks is not None:
        low, high, tails = _order_statistics(v, ranks, v.dtype.type(lo), v.dtype.type(hi))
        if _winsorising_may_matter(v, low, high, plain[1], tails):
            winsorised = _mean_std(np.clip(v, low, high), max(abs(float(low)), abs(float(high))))
    return choose_moments(len(v), lo, hi, plain, winsorised)


def _winsorising_may_matter(v: np.ndarray, low, high, std: float, tails=None) -> bool:
    """False when the winsorised std provably stays above std / ``_INFLATION``, so that
    ``choose_moments`` keeps the plain moments whatever its value (the same choice without
    forming it: two float64 passes over the column saved). Winsorising moves only the tail
    values, by D = v - clip(v), and std(clip(v)) >= std(v) - sqrt(mean(D^2)) (Minkowski's
    inequality); the 1e-6 margin covers the rounding of both stds. ``tails``: the values
    up to / from thresholds beyond ``low`` / ``high`` (``_order_statistics``), in v's order,
    which hold every value outside [low, high]: read instead of the whole column (the same
    values in the same order, so the same sums)."""
    lower, upper = (v, v) if tails is None else tails
    below = np.asarray(lower[lower < low], dtype=np.float64)
    above = np.asarray(upper[upper > high], dtype=np.float64)
    excess = np.sqrt((np.sum(np.square(float(low) - below)) + np.sum(np.square(above - float(high))))
                     / len(v))
    return not excess <= (1 - 1 / _INFLATION) * std * (1 - 1e-6)


def tail_ranks(n: int) -> tuple[int, int] | None:
    """Ranks (0-based, ascending) of the order statistics a column of n values is winsorised
    at: ``_TAIL`` of the rows at each end, at least one; None when too few rows."""
    k = max(1, int(n * _TAIL))
    return (k, n - 1 - k) if 2 * k < n - 1 else None


def choose_moments(n, lo, hi, plain, winsorised) -> tuple[float, float, str | None, int]:
    """(center, 1 / scale, why dropped or None, exponent) from a column's row count, range,
    plain (mean, std) and (mean, std) winsorised at its ``tail_ranks`` (None when not formed).
    The plain moments, unless extreme rows inflate the std more than twofold over the
    winsorised one: then the winsorised moments, so one outlier cannot flatten a column.
    A winsorised std of 0 (a rare 0/1 flag) keeps the plain moments. A std so small that
    its inverse overflows (a subnormal-scaled column still carries information) gives the
    moments of the values times 2^exponent, which brings the std near 1 exactly."""
    if n == 0:
        return np.nan, np.nan, "no fitted rows", 0
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return np.nan, np.nan, "not finite", 0
    if lo == hi:
        return float(lo), np.nan, "constant on the fitted rows", 0
    mean, std = plain
    if winsorised is not None:
        w_mean, w_std = winsorised
        if w_std > 0 and std > _INFLATION * w_std:
            mean, std = w_mean, w_std
    exponent = 0
    if 0 < std < 1.0 / np.finfo(np.float64).max:  # 1 / std would overflow
        exponent = -int(np.frexp(std)[1])  # std 2^exponent in [0.5, 1)
        mean, std = float(np.ldexp(mean, exponent)), float(np.ldexp(std, exponent))
    if not (np.isfinite(mean) and np.isfinite(std) and np.isfinite(1.0 / std) and std > 0):
        return np.nan, np.nan, "not finite after standardising", 0
    return mean, 1.0 / std, None, exponent


def _as_labels(values: pd.Series) -> np.ndarray:
    """Categorical values as strings; missing values are a level of their own."""
    return values.astype(object).where(values.notna(), MISSING).astype(str).to_numpy(dtype=object)


def _levels(labels: np.ndarray, max_levels: int, min_count: int) -> tuple[list[str], int]:
    """Levels with at least ``min_count`` rows, at most ``max_levels - 1`` of them
    by frequency (ties by label, so row order never matters) when pooling is needed; the
    rest pool into ``__other__``. Returns the levels, how many were pooled and their rows."""
    uniques, counts = np.unique(labels.astype(str), return_counts=True)
    return levels_from_counts(uniques, counts, max_levels, min_count)


def levels_from_counts(uniques: np.ndarray, counts: np.ndarray, max_levels: int,
                       min_count: int) -> tuple[list[str], int]:
    """``_levels`` from the distinct labels (sorted, unique) and their row counts, the
    reference first (``reference_first``); rare or surplus levels pooled into ``__other__``."""
    uniques, counts = np.asarray(uniques).astype(str), np.asarray(counts)
    keep = counts >= min_count
    if keep.sum() > max_levels - (not keep.all()):
        keep = np.zeros(len(uniques), dtype=bool)
        keep[frequency_order(uniques, counts)[:max_levels - 1]] = True
    n_pooled = int((~keep).sum())
    kept = {str(level): int(count) for level, count in zip(uniques[keep], counts[keep])}
    if n_pooled:
        kept[OTHER] = kept.get(OTHER, 0) + int(counts[~keep].sum())
    levels = reference_first(list(kept), list(kept.values()))
    return levels, n_pooled, int(counts[~keep].sum())


def _level_codes(labels: np.ndarray, levels: list[str]) -> np.ndarray:
    """Index of each label in ``levels``; labels not listed go to ``__other__`` (if listed)
    or to the reference level 0."""
    codes = pd.Index(levels).get_indexer(labels)
    codes[codes < 0] = levels.index(OTHER) if OTHER in levels else 0
    return codes


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
