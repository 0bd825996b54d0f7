"""Positivity within discrete strata: an item never (or always) recommended to a level of a
categorical confounder (a device, a country, a user group).

The propensity model cannot show this reliably: a pooled model shrinks an item's level
coefficient toward the other items', and on healthy logs many items have some clipped rows
anyway (the simulator's: 1-5% at the median, up to 25%, covering 0.92-0.95). But a level
holding 5% of an item's rows that was never treated, where the item's own rate expects 10 or
more treated rows there, makes the item's effect an extrapolation of the outcome models into
that level: 5% of the rows covered 0.70 of 20 items (mean z +1.5), 15% covered none (+4.3)
while the clip rule (30% of rows clipped) kept them "ok" (tests/estimate/test_positivity.py).
The counts come from the log (pandas) or from one Spark aggregation per column; this module
turns them into the per-item share the status reads (``scores.post_status``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["EXPECTED_MIN", "ONE_ARM_MAX", "one_arm_share", "stratum_counts"]

# an arm missing from a level counts once its expected rows there (at the item's own rate)
# reach this: P(none | the item's rate) = exp(-10) ~ 5e-5 per level
EXPECTED_MIN = 10.0
# share of an item's rows in one-arm levels above which its effect is "no_overlap"
ONE_ARM_MAX = 0.05


def stratum_counts(seg, labels, t):
    """(item, rows, treated rows) per (item, level) present: ``labels`` any hashable values
    per row (a categorical confounder, missing values a level of their own)."""
    import pandas as pd
    codes = pd.factorize(labels, use_na_sentinel=False)[0].astype(np.int64)
    width = int(codes.max()) + 1 if len(codes) else 1
    pairs, inverse = np.unique(np.asarray(seg, np.int64) * width + codes, return_inverse=True)
    return (pairs // width, np.bincount(inverse).astype(np.float64),
            np.bincount(inverse, weights=np.asarray(t, np.float64)))


def one_arm_share(strata, n_all, n_t):
    """Per item, the largest share of its rows, over the categorical confounders, that lie
    in levels without a treated (or without a control) row where the item's own rate
    expects ``EXPECTED_MIN`` of them. ``strata``: one ``stratum_counts`` triple per column."""
    n_all = np.asarray(n_all, np.float64)
    rate = np.divide(n_t, n_all, out=np.zeros(len(n_all)), where=n_all > 0)
    share = np.zeros(len(n_all))
    for item, rows, treated in strata:
        expect_t, expect_c = rows * rate[item], rows * (1 - rate[item])
        one_arm = (((treated == 0) & (expect_t >= EXPECTED_MIN))
                   | ((treated == rows) & (expect_c >= EXPECTED_MIN)))
        in_one_arm = np.bincount(item, weights=rows * one_arm, minlength=len(n_all))
        share = np.maximum(share, np.divide(in_one_arm, n_all, out=np.zeros(len(n_all)),
                                            where=n_all > 0))
    return share
