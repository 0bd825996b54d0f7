"""Scale of a continuous outcome, and the float32 check at the input door.

The nuisance fits run in the estimator's dtype (float32 by default), whose 24-bit mantissa
cannot hold a revenue column with an offset of 1e8 to better than +-4: cast first, every
residual would be rounding. So a continuous outcome is centred and scaled in float64 before
any fit (``OutcomeScale``), the fits see values of order 1, and their predictions are mapped
back in float64; the influence values and every reported number are in the user's units.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..exceptions import DataWarning
from .design import SAMPLE, _mean_std

__all__ = ["OutcomeScale", "float32_merged_share", "outcome_for_fits", "warn_float32_precision"]

# share of a column's distinct values that float32 may merge before the door warns: a
# continuous column of 20,000 sampled values merges ~0.01% by chance (birthday bound at
# float32's 2^-23 relative spacing); a column whose differences lie below float32's
# resolution at its standardised scale merges most of them
MERGED_SHARE = 0.01
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class OutcomeScale:
    """Centre and scale of an outcome (float64 mean and population std of its fitted rows,
    computed two-pass on values divided by their largest magnitude: no cancellation, no
    overflow). ``standardise`` maps values to the fits' scale, ``restore`` maps predictions
    back; a constant or empty outcome keeps scale 1."""

    center: float = 0.0
    scale: float = 1.0

    @classmethod
    def of(cls, y: np.ndarray) -> "OutcomeScale":
        y = np.asarray(y)
        if not len(y):
            return cls()
        return cls.from_moments(*_mean_std(y, float(np.max(np.abs(y)))))

    @classmethod
    def from_moments(cls, mean: float, std: float) -> "OutcomeScale":
        """The scale of an outcome with this mean and std (e.g. from a Spark aggregation)."""
        if not np.isfinite(mean):
            return cls()
        usable = std > 0 and np.isfinite(std) and np.isfinite(1 / std)
        return cls(float(mean), float(std) if usable else 1.0)

    def standardise(self, y: np.ndarray) -> np.ndarray:
        """(y - center) / scale in float64."""
        return (np.asarray(y, dtype=np.float64) - self.center) / self.scale

    def restore(self, values: torch.Tensor) -> torch.Tensor:
        """Predictions on the fits' scale back in the outcome's units, in float64."""
        return values.to(torch.float64) * self.scale + self.center


def outcome_for_fits(y: np.ndarray, family: str, dtype, name: str):
    """(``OutcomeScale``, the outcome the nuisance fits see): a gaussian outcome centred and
    scaled in float64 (with the float32 check when ``dtype`` is float32); a logistic one as
    it is (0/1 needs no scale; a one-byte column stays one byte)."""
    if family != "gaussian":
        return OutcomeScale(), y
    scale = OutcomeScale.of(y)
    if np.dtype(dtype) == np.float32:
        warn_float32_precision([(name, y, scale.center, 1.0 / scale.scale)])
    return scale, scale.standardise(y)


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
