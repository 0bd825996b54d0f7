"""The order of a categorical's levels, one rule for every penalised model that encodes one
(the estimator's design, the uplift features, the ranking's item covariates)."""
from __future__ import annotations

import numpy as np

__all__ = ["frequency_order", "reference_first"]


def frequency_order(labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Positions of ``labels`` from the most to the least frequent, ties by label."""
    return np.lexsort((np.asarray(labels).astype(str), -np.asarray(counts)))


def reference_first(labels, counts) -> list[str]:
    """A categorical's levels as text, the reference first: the most frequent level, ties by
    label; then the others sorted. The penalised fits shrink towards the reference, so a
    choice by label would let renaming a level ("rare" -> "a_rare") move the answers."""
    labels = np.asarray(labels).astype(str)
    reference = labels[frequency_order(labels, counts)[0]]
    return [str(reference)] + sorted(str(level) for level in labels if level != reference)
