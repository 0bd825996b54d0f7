"""The float32 check at the input door: which standardised columns float32 cannot hold.

Below ``design`` and ``scaling`` (both run it: on the confounders, on a continuous outcome).
"""
from __future__ import annotations

import warnings

import numpy as np

from ..exceptions import DataWarning

__all__ = ["SAMPLE", "MERGED_SHARE", "float32_merged_share", "warn_float32_precision"]

SAMPLE = 20_000  # values of a column read by the checks that need only a strided sample
# share of a column's distinct values that float32 may merge before the door warns: a
# continuous column of 20,000 sampled values merges ~0.01% by chance (birthday bound at
# float32's 2^-23 relative spacing); a column whose differences lie below float32's
# resolution at its standardised scale merges most of them
MERGED_SHARE = 0.01
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def float32_merged_share(values: np.ndarray, center: float, inv_scale: float) -> float:
    """Share of the distinct standardised values ``(v - center) * inv_scale`` of a strided
    sample (``SAMPLE`` values) of ``values`` that float32 merges (1 when some overflow
    float32)."""
    sample = np.asarray(values[::max(1, len(values) // SAMPLE)], dtype=np.float64)
    z = (sample[np.isfinite(sample)] - center) * inv_scale
    if not len(z):
        return 0.0
    if np.max(np.abs(z)) > _FLOAT32_MAX:
        return 1.0
    distinct = len(np.unique(z))
    return 1.0 - len(np.unique(z.astype(np.float32))) / distinct


def warn_float32_precision(columns) -> None:
    """One ``DataWarning`` naming the columns (``(name, values, center, inv_scale)``) whose
    standardised values float32 cannot hold: more than ``MERGED_SHARE`` of their distinct
    values merge, or some overflow. Centring and scaling (done in float64 before the cast)
    cannot help there: the differences that matter are below float32's resolution."""
    bad = [name for name, values, center, inv_scale in columns
           if float32_merged_share(values, center, inv_scale) > MERGED_SHARE]
    if bad:
        warnings.warn(
            f"float32 cannot hold the values of {', '.join(map(repr, bad))} to the precision "
            "they carry, even centred and scaled (their differences that matter are below "
            "float32's resolution, or values overflow it): use dtype='float64'",
            DataWarning, stacklevel=4)
