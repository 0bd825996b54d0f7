"""Scale of a continuous outcome (the float32 check at the input door: ``precision``).

The nuisance fits run in the estimator's dtype (float32 by default), whose 24-bit mantissa
cannot hold a revenue column with an offset of 1e8 to better than +-4: cast first, every
residual would be rounding. So a continuous outcome is centred and scaled in float64 before
any fit (``OutcomeScale``), the fits see values of order 1, and their predictions are mapped
back in float64; the influence values and every reported number are in the user's units.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .design import _mean_std
# the float32 check is part of this module's API (the door's check of the outcome)
from .precision import float32_merged_share, warn_float32_precision

__all__ = ["OutcomeScale", "float32_merged_share", "outcome_for_fits", "warn_float32_precision"]


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
