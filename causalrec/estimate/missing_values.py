"""Missing values of numeric confounders (``InteractionLog(missing="indicator")``): the value
a column's missing entries take (the median of its observed values, an order statistic, so
neither row order nor sharding moves it) and the name of its 0/1 indicator column. One
implementation, read by the local design (``design.py``), Spark's stage 0 and the uplift
model's features."""
from __future__ import annotations

import numpy as np

__all__ = ["MISSING", "fill_of", "indicator_name", "median", "middle"]

MISSING = "__missing__"  # a missing categorical level, and the indicator's level


def indicator_name(col: str) -> str:
    """The design column marking the rows where the numeric confounder ``col`` is missing
    (named as a categorical's level: a missing categorical value is the level MISSING)."""
    return f"{col}={MISSING}"


def fill_of(values: np.ndarray) -> tuple[float, np.ndarray]:
    """The fill of a numeric column's values (the ``median`` of its observed ones) and where
    it is missing (NaN), as booleans."""
    missing = np.isnan(values)
    return median(values[~missing]), missing


def median(values: np.ndarray) -> float:
    """The median of observed values, as float64: the mean of the two middle order
    statistics (each exact, so row order cannot move it), 0.0 when there are none (the
    filled column is then constant and dropped as such)."""
    n = len(values)
    if n == 0:
        return 0.0
    low, high = np.partition(values, ((n - 1) // 2, n // 2))[[(n - 1) // 2, n // 2]]
    return middle(float(low), float(high))


def middle(low: float, high: float) -> float:
    """The midpoint of the two middle order statistics, halved first (no overflow); the one
    formula the local and the Spark design use."""
    return low / 2 + high / 2


def _filled(values: np.ndarray, missing: np.ndarray, fill: float) -> np.ndarray:
    """The values in float64 with the ``missing`` ones set to ``fill`` (float64 whatever the
    column's type, as Spark reads it: a float32 column's fill is not rounded)."""
    out = values.astype(np.float64)
    out[missing] = fill
    return out
