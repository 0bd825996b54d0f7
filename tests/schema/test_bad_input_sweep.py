"""Bad input found by a sweep beyond the log door's property: results' own arguments,
parameters the estimator passes on and column dtypes pandas calls numeric. Each is a
documented error naming what is wrong, never a silent number or an error from deep inside."""
import warnings

import numpy as np
import pytest
from test_bad_input import ROLES, small_log

import causalrec as cr
from causalrec.exceptions import DataWarning


@pytest.fixture(scope="module")
def fitted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return cr.ItemEffectEstimator(n_repeats=1).fit(cr.InteractionLog(small_log(0), **ROLES))


@pytest.mark.parametrize("alpha", [1.5, 0, -1, "x"])
def test_results_alpha_outside_zero_one_is_a_value_error(fitted, alpha):
    # was: 1.5 gave intervals with low > high, 0 infinite ones, -1 NaN
    for result in (fitted.effect_interval, fitted.effect_interval_frame, fitted.ate,
                   fitted.summary_frame):
        with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
            result(alpha=alpha)
    low, high = fitted.effect_interval(alpha=0.1)
    assert (low < high).all()

