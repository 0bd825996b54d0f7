"""Stage 0 on Spark: validate the frame, count rows per item and arm, and build the design
spec from aggregations, so the driver holds the same facts the local estimator computes
from the whole log (per-item counts and statuses, float64 moments of the fitted rows,
categorical levels, the 0/1 outcome checks)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ..estimate.design import (DesignSpec, _as_labels, _level_codes, choose_moments,
                               levels_from_counts, segment_ids, tail_ranks)
from ..estimate.missing_values import indicator_name, middle
from ..estimate.plan import ItemFacts
from ..estimate.positivity import one_arm_share
from ..estimate.scaling import OutcomeScale
from ..estimate.scores import pre_status
from ..schema import InteractionLog, SchemaError, _as_list

__all__ = ["validate", "item_facts", "design_spec", "outcome_scale", "schema_frame",
           "check_fold_column"]

SAMPLE_ROWS = 1000  # rows validated with InteractionLog (column presence, roles, dtypes)
WITNESS_ROWS = 1000  # offending rows shown to InteractionLog so it raises its own error


def _F():
    from pyspark.sql import functions as F
    return F


def validate(sdf, roles: dict) -> InteractionLog:
    """A validated ``InteractionLog`` of the first rows (missing columns, roles and dtypes
    raise the pandas ``SchemaError``), then Spark-wide checks of the values: where one fails,
    offending rows are added to the sample so ``InteractionLog`` raises its own error."""
    F = _F()
    _check_spark_names_and_types(sdf, roles)
    sample = sdf.limit(SAMPLE_ROWS).toPandas()
    log = InteractionLog(sample, **roles)
    t = F.col(log.treatment).cast("double")
    bad_t = t.isNull() | ~t.isin(0.0, 1.0)
    checks = {col: F.col(col).isNull() for col in log.item_columns}  # InteractionLog's order
    if log.unit is not None:
        checks[log.unit] = F.col(log.unit).isNull()
    checks["treatment"] = bad_t
    for col in [log.outcome, *log.confounders] + ([log.propensity] if log.propensity else []):
        v = F.col(col).cast("double")
        checks[col] = (F.abs(v) == float("inf"))
        if not (col in log.confounders and log.missing == "indicator"):
            checks[col] = checks[col] | _missing(v)
    if log.propensity:
        p = F.col(log.propensity).cast("double")
        checks["propensity range"] = (p <= 0) | (p > 1) | ((t == 0) & (p >= 1))
    counts = sdf.agg(*[F.sum(F.when(c, 1).otherwise(0)).alias(f"c{i}")
                       for i, c in enumerate(checks.values())]).first()
    for i, (name, cond) in enumerate(checks.items()):
        if not counts[f"c{i}"]:
            continue
        if name == "treatment":  # the message lists the smallest distinct values: those five
            values = (sdf.select(t.alias("v")).where(t.isNotNull()).distinct().orderBy("v")
                      .limit(5).toPandas()["v"])
            witness = pd.concat([sample.iloc[:1]] * len(values), ignore_index=True)
            witness[log.treatment] = values.to_numpy()
            nulls = sdf.where(F.col(log.treatment).isNull()).limit(WITNESS_ROWS).toPandas()
            witness = pd.concat([nulls, witness], ignore_index=True) if len(nulls) else witness
        else:
            witness = sdf.where(cond).limit(WITNESS_ROWS).toPandas()
        InteractionLog(pd.concat([sample, witness], ignore_index=True), **roles)
        raise SchemaError(None, f"a Spark-wide check failed ({name}) that the rows shown to "
                          "InteractionLog did not reproduce")  # cannot happen: a guard
    return log


_NUMERIC_ROLES = ("treatment", "outcome", "confounders", "propensity")


def _check_spark_names_and_types(sdf, roles: dict) -> None:
    """What only Spark gets wrong in a log the pandas checks would pass: a '.' in a role's
    column name (Spark reads it as a struct field: an ``AnalysisException`` deep in a job)
    and a decimal column in a numeric role (pandas receives Decimal objects, "not numeric").
    Each is a ``SchemaError`` naming the column and the one-line fix."""
    from pyspark.sql.types import DecimalType
    types = {f.name: f.dataType for f in sdf.schema.fields}
    for role, cols in roles.items():
        if role == "missing":
            continue
        for col in _as_list(cols):
            if isinstance(col, str) and "." in col and col in types:
                raise SchemaError(col, "Spark reads a '.' in a column name as a struct field: "
                                  f"rename it first, e.g. sdf = sdf.withColumnRenamed({col!r}, "
                                  f"{col.replace('.', '_')!r})")
            if role in _NUMERIC_ROLES and isinstance(types.get(col), DecimalType):
                raise SchemaError(col, f"Spark type {types[col].simpleString()} reaches pandas as "
                                  "Decimal objects: cast it to double first, e.g. sdf = "
                                  f"sdf.withColumn({col!r}, F.col({col!r}).cast('double'))")


def schema_frame(sdf) -> pd.DataFrame:
    """An empty pandas frame with the Spark frame's columns, numeric (or bool) where Spark's
    type is: what a ``CausalGraph`` reads to map its adjustment set to roles (no rows read)."""
    from pyspark.sql.types import BooleanType, NumericType
    kind = lambda t: ("bool" if isinstance(t, BooleanType) else "float64"
                      if isinstance(t, NumericType) else "str")
    return pd.DataFrame({f.name: pd.Series([], dtype=kind(f.dataType)) for f in sdf.schema.fields})


def check_fold_column(sdf, column, n_folds: int) -> None:
    """``folds`` on Spark names an integer column of ``sdf`` holding each row's fold in
    [0, n_folds) (a row order to align an array with does not exist); else ``ValueError``
    (one aggregation checks the values)."""
    from pyspark.sql.types import IntegralType
    F = _F()
    if not isinstance(column, str):
        raise ValueError("folds on a Spark frame must be the name of an integer column (one "
                         f"fold in [0, {n_folds}) per row), got {type(column).__name__}")
    types = {f.name: f.dataType for f in sdf.schema.fields}
    if column not in types:
        raise ValueError(f"folds names {column!r}, which is not a column of the Spark frame")
    if not isinstance(types[column], IntegralType):
        raise ValueError(f"folds column {column!r} must hold integers, got "
                         f"{types[column].simpleString()}")
    c = F.col(column)
    got = sdf.agg(F.min(c).alias("lo"), F.max(c).alias("hi"),
                  F.sum(F.when(c.isNull(), 1).otherwise(0)).alias("nulls")).first()
    if got["nulls"]:
        raise ValueError(f"folds column {column!r} has {got['nulls']} missing values")
    if got["lo"] is not None and (got["lo"] < 0 or got["hi"] >= n_folds):
        raise ValueError(f"folds must lie in [0, {n_folds}), found {got['lo']}..{got['hi']} "
                         f"in column {column!r}")


class Tallies(NamedTuple):
    """What ``item_facts``' aggregations also give the later steps, saving passes."""
    level_rows: dict         # categorical -> rows per item (``_item``) and level: design_spec's
    largest_outcome: float   # max |outcome| on the fitted rows: outcome_scale's


def item_facts(sdf, log: InteractionLog, min_rows_per_arm: int) -> tuple[ItemFacts, Tallies]:
    """One aggregation per item: rows per arm, the outcome's range and 0/1 count; and one
    per categorical confounder: rows per item and level, which give the positivity check's
    one-arm share here and the design's level counts (``design_spec``) without another
    pass over the log. -> (facts, tallies)."""
    F = _F()
    keys, y = log.item_columns, F.col(log.outcome).cast("double")
    t = F.col(log.treatment).cast("double")
    per_item = sdf.groupBy(*keys).agg(
        F.count(F.lit(1)).alias("_n"), F.sum(t).alias("_nt"), F.min(y).alias("_ymin"),
        F.max(y).alias("_ymax"),
        F.sum(F.when(~y.isin(0.0, 1.0), 1).otherwise(0)).alias("_nonbinary")).toPandas()
    codes, segments = segment_ids(per_item, keys)
    order = np.argsort(codes)  # one aggregated row per item: codes are a permutation
    per_item = per_item.iloc[order].reset_index(drop=True)
    segments = segments.astype({k: log.data[k].dtype for k in keys}, errors="ignore")
    n_all = per_item["_n"].to_numpy(np.int64)
    n_t = per_item["_nt"].to_numpy(np.float64).astype(np.int64)
    status = pre_status(n_t, n_all - n_t, min_rows_per_arm)
    use = status == "ok"
    ymin, ymax = per_item["_ymin"].to_numpy(float), per_item["_ymax"].to_numpy(float)
    if use.any() and ymin[use].min() == ymax[use].max():  # as the local fit: nothing to model
        status[use] = "constant_outcome"
        use[:] = False
    nonbinary = per_item["_nonbinary"].to_numpy(np.int64)
    fitted = use if use.any() else np.ones(len(use), dtype=bool)
    level_rows = _level_rows(sdf, log, per_item[keys])
    strata = [(c["_item"].to_numpy(np.int64), c["_rows"].to_numpy(np.float64),
               c["_treated"].to_numpy(np.float64)) for c in level_rows.values()]
    facts = ItemFacts(segments, n_all, n_t, status, use, bool(nonbinary.sum() == 0),
                      bool(nonbinary[fitted].sum() == 0),
                      one_arm_share=one_arm_share(strata, n_all, n_t))
    largest = float(np.max(np.abs([ymin[fitted], ymax[fitted]]))) if len(ymin) else 0.0
    return facts, Tallies(level_rows, largest)


def _level_rows(sdf, log, item_keys) -> dict:
    """Each categorical confounder's rows and treated rows per item (``_item``: its code)
    and level (a null level is a group of its own, as a missing value is locally)."""
    F = _F()
    t = F.col(log.treatment).cast("double")
    code = item_keys.reset_index().rename(columns={"index": "_item"})
    return {col: (sdf.groupBy(*log.item_columns, col)
                  .agg(F.count(F.lit(1)).alias("_rows"), F.sum(t).alias("_treated")).toPandas()
                  .merge(code, on=list(log.item_columns), how="left"))
            for col in log.categorical}


def _exact_fraction(rank: int, n: int) -> float:
    """p with (n - 1) * p == rank in float64: Spark's exact ``percentile`` then returns the
    order statistic of that rank itself, no interpolation."""
    p = rank / (n - 1)
    best = None  # (distance, p) of the closest position at or above the rank
    for _ in range(8):
        position = float(n - 1) * p
        if position == rank:
            return p
        if position > rank and (best is None or position - rank < best[0]):
            best = (position - rank, p)
        p = np.nextafter(p, np.inf if position < rank else -np.inf)
    # Some ranks have no such p (the products skip the integer, e.g. rank 30 of 3000): the
    # position a few ulps above the rank weights the next order statistic by ~1e-15.
    return best[1] if best is not None else np.nextafter(rank / (n - 1), np.inf)


_ACCURACY = 10_000  # approx_percentile's accuracy: rank error at most n / _ACCURACY


def _missing(v):
    """A missing value of a double column on Spark: null, or NaN (pandas' missing value)."""
    return v.isNull() | _F().isnan(v)


def _brackets(v, fractions):
    """approx_percentile at each fraction -+ 3 rank errors: values at or below / at or
    above the exact order statistic (checked by counts in ``_order_statistics``)."""
    F, margin = _F(), 3.0 / _ACCURACY
    points = [min(max(p + side * margin, 0.0), 1.0) for p in fractions for side in (-1, 1)]
    return F.percentile_approx(v, F.array(*[F.lit(p) for p in points]), _ACCURACY)


def _order_statistics(fitted, values, brackets, ranks, counts) -> list[list[float]]:
    """The exact order statistics of each column (``values``: Spark expressions, nulls
    skipped) at its ``ranks`` among its ``counts`` non-null values, with memory bounded by
    the bracket widths (at most ~10 n / _ACCURACY values), not by the column's distinct
    values: count the values below and inside each approximate bracket, then take Spark's
    exact ``percentile`` of the values inside it at the rank among them. A bracket that
    misses its rank (never expected) falls back to the exact percentile of the whole column."""
    F = _F()
    sums, inside = [], {}
    for i, v in enumerate(values):
        for j in range(len(ranks[i])):
            low, high = brackets[i][2 * j], brackets[i][2 * j + 1]
            inside[i, j] = (v >= F.lit(low)) & (v <= F.lit(high))
            sums += [F.sum(F.when(v < F.lit(low), 1).otherwise(0)).alias(f"below{i}_{j}"),
                     F.sum(F.when(inside[i, j], 1).otherwise(0)).alias(f"in{i}_{j}")]
    got = fitted.agg(*sums).first()
    aggs = []
    for i, v in enumerate(values):
        for j, rank in enumerate(ranks[i]):
            below, m = int(got[f"below{i}_{j}"] or 0), int(got[f"in{i}_{j}"] or 0)
            if below <= rank < below + m:
                chosen, at, count = F.when(inside[i, j], v), rank - below, m
            else:
                chosen, at, count = v, rank, counts[i]
            fraction = _exact_fraction(at, count) if count > 1 else 0.0
            aggs.append(F.percentile(chosen, F.lit(fraction)).alias(f"q{i}_{j}"))
    row = fitted.agg(*aggs).first()
    return [[row[f"q{i}_{j}"] for j in range(len(ranks[i]))] for i in range(len(values))]


def _fills(fitted, confounders: list[str], n: int) -> tuple[dict, dict]:
    """``DesignSpec.from_log``'s fill of each numeric confounder (``median`` of its observed
    values: the two middle order statistics, exact, through ``middle``) and its missing
    count on the n rows of ``fitted``, by aggregations."""
    F = _F()
    observed = [F.when(~_missing(F.col(c).cast("double")), F.col(c).cast("double"))
                for c in confounders]
    first = fitted.agg(*[agg for i, v in enumerate(observed) for agg in (
        F.sum(F.when(v.isNull(), 1).otherwise(0)).alias(f"na{i}"),
        _brackets(v, [0.5]).alias(f"b{i}"))]).first()
    n_missing = {c: int(first[f"na{i}"] or 0) for i, c in enumerate(confounders)}
    present = [i for i, c in enumerate(confounders) if n_missing[c] < n]
    counts = [n - n_missing[confounders[i]] for i in present]
    middles = _order_statistics(
        fitted, [observed[i] for i in present], [first[f"b{i}"] * 2 for i in present],
        [((m - 1) // 2, m // 2) for m in counts], counts) if present else []
    fill = {c: 0.0 for c in confounders}  # no observed value: the column is constant
    fill.update({confounders[i]: middle(*map(float, q)) for i, q in zip(present, middles)})
    return fill, n_missing


def design_spec(fitted, log: InteractionLog, n: int, outcome_binary, max_levels: int = 50,
                min_level_count: int = 10, extra=None, level_rows=None,
                items=None) -> DesignSpec:
    """``DesignSpec.from_log`` of the rows of ``fitted`` (n of them), by aggregations;
    ``extra`` : (Spark column, design name) pairs of extra numeric columns (text components);
    ``level_rows`` : ``item_facts``'s rows per item and level, summed here over the items
    ``items`` (a mask; None: all) that ``fitted`` holds, instead of counting them again."""
    F = _F()
    extra = list(extra or [])
    numeric = list(log.confounders) + [col for col, _ in extra]
    fill, n_missing = (_fills(fitted, list(log.confounders), n) if log.missing == "indicator"
                       and log.confounders else ({}, {}))

    def value(col):  # a numeric column as the design reads it (missing values filled)
        v = F.col(col).cast("double")
        return F.when(_missing(v), F.lit(fill[col])).otherwise(v) if col in fill else v

    ranks = tail_ranks(n)
    stats = {}
    if numeric:
        aggs = []
        for i, col in enumerate(numeric):
            v = value(col)
            aggs += [F.min(v).alias(f"lo{i}"), F.max(v).alias(f"hi{i}")]
            if ranks is not None:
                aggs.append(_brackets(v, [r / n for r in ranks]).alias(f"b{i}"))
        first = fitted.agg(*aggs).first()
        tails = (_order_statistics(fitted, [value(col) for col in numeric],
                                   [first[f"b{i}"] for i in range(len(numeric))],
                                   [ranks] * len(numeric), [n] * len(numeric))
                 if ranks is not None else None)
        second = []
        for i, col in enumerate(numeric):
            lo, hi = first[f"lo{i}"], first[f"hi{i}"]
            stats[col] = dict(lo=lo, hi=hi, q=tails[i] if ranks is not None else None)
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo == hi:
                continue
            v = value(col)
            # the moments of _mean_std: values scaled by the largest magnitude first
            m = max(abs(lo), abs(hi))
            second += [F.avg(v / m).alias(f"m{i}"), F.stddev_pop(v / m).alias(f"s{i}")]
            stats[col]["m"] = m
            if ranks is not None:
                low, high = stats[col]["q"]
                w, mw = F.least(F.greatest(v, F.lit(low)), F.lit(high)), max(abs(low), abs(high))
                stats[col]["mw"] = mw
                if mw > 0:
                    second += [F.avg(w / mw).alias(f"wm{i}"), F.stddev_pop(w / mw).alias(f"ws{i}")]
        moments_row = fitted.agg(*second).first() if second else None
    moments, categorical, pooled, dropped, pooled_rows = [], {}, {}, {}, {}
    numeric_moments = []
    for i, col in enumerate(numeric):
        s = stats[col]
        plain = winsorised = None
        if "m" in s:
            plain = (s["m"] * moments_row[f"m{i}"], s["m"] * moments_row[f"s{i}"])
            if ranks is not None:
                winsorised = ((s["mw"] * moments_row[f"wm{i}"], s["mw"] * moments_row[f"ws{i}"])
                              if s["mw"] > 0 else (0.0, 0.0))
        numeric_moments.append(choose_moments(n, s["lo"], s["hi"], plain, winsorised))
    n_conf = len(log.confounders)
    indicators = [col for col in log.confounders if n_missing.get(col)]
    for col, m in zip(log.confounders, numeric_moments[:n_conf]):
        moments.append((col, m))
        if col in indicators:  # right after its column, as DesignSpec.from_log
            moments.append((indicator_name(col), _indicator_moments(n_missing[col], n, ranks)))
    for col in log.categorical:
        if level_rows is None:
            counts = fitted.groupBy(col).count().toPandas()
        else:  # the rows of (item, level) groups; np.unique below sums them by level
            counts = level_rows[col].rename(columns={"_rows": "count"})
            if items is not None:
                counts = counts[items[counts["_item"].to_numpy(np.int64)]]
        labels = _as_labels(counts[col])
        uniques, inverse = np.unique(labels.astype(str), return_inverse=True)
        label_counts = np.bincount(inverse, weights=counts["count"].to_numpy(), minlength=len(uniques))
        levels, n_pooled, rows_pooled = levels_from_counts(
            uniques, label_counts.astype(np.int64), max_levels, min_level_count)
        categorical[col] = levels
        if n_pooled:
            pooled[col], pooled_rows[col] = n_pooled, rows_pooled
        if len(levels) < 2:
            dropped[col] = "a single level on the fitted rows"
        ones = np.bincount(_level_codes(uniques, levels), weights=label_counts,
                           minlength=len(levels)).astype(np.int64)
        for k, level in enumerate(levels[1:], start=1):
            moments.append((f"{col}={level}", _indicator_moments(int(ones[k]), n, ranks)))
    moments += [(name, m) for (_, name), m in zip(extra, numeric_moments[n_conf:])]
    return DesignSpec.from_moments(list(log.confounders), categorical, [name for _, name in extra],
                                   moments, dropped, pooled, outcome_binary, n,
                                   pooled_rows=pooled_rows, fill=fill, indicators=indicators)


def outcome_scale(fitted, outcome: str, largest: float) -> OutcomeScale:
    """``OutcomeScale.of`` the outcome of the rows of ``fitted``, by aggregations (the same
    moments: values divided by their largest magnitude first; ``largest``: that magnitude,
    ``item_facts``' ``Tallies.largest_outcome``)."""
    F = _F()
    y, m = F.col(outcome).cast("double"), largest
    if not m or not np.isfinite(m):
        return OutcomeScale()
    row = fitted.agg(F.avg(y / m), F.stddev_pop(y / m)).first()
    return OutcomeScale.from_moments(m * row[0], m * row[1])


def _indicator_moments(c: int, n: int, ranks):
    """Moments of a 0/1 column with c ones in n rows, from the counts alone."""
    if n == 0:
        return choose_moments(0, np.nan, np.nan, None, None)
    lo, hi = float(c == n), float(c > 0)
    p = c / n
    plain = (p, float(np.sqrt(p * (1 - p))))
    winsorised = None
    if ranks is not None:
        low, high = (float(r >= n - c) for r in ranks)  # order statistics of n - c zeros, c ones
        winsorised = plain if low != high else (low, 0.0)
    return choose_moments(n, lo, hi, plain, winsorised)
