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


@pytest.mark.parametrize("nuisance", ["per_item", "pooled", "boosted"])
def test_fitted_rows_in_one_fold_are_an_error_not_the_naive_difference(nuisance):
    # was: the models for that fold were fitted on no rows (every propensity and outcome
    # prediction 0.5) and each item reported its unadjusted difference as "ok"
    df = small_log(0).assign(u=7)
    with pytest.raises(ValueError, match="unit column 'u' puts every fitted row in fold"):
        cr.estimate_item_effects(df, **ROLES, unit="u", nuisance=nuisance,
                                 refit_small_logs=False)
    log = cr.InteractionLog(df, **ROLES)
    with pytest.raises(ValueError, match="the given folds put every fitted row in fold 0"):
        cr.ItemEffectEstimator(nuisance=nuisance).fit(log, folds=np.zeros(len(df), int))
    # one fold of rows is what n_folds=1 asks for; three units may fill 2 of 5 folds
    assert (cr.estimate_item_effects(df, **ROLES, unit="u", nuisance=nuisance,
                                     n_folds=1)["status"] == "ok").all()
    few = df.assign(u=np.arange(len(df)) % 3)
    assert (cr.estimate_item_effects(few, **ROLES, unit="u", nuisance=nuisance, n_folds=5,
                                     n_repeats=1)["status"] == "ok").all()


@pytest.mark.parametrize("column", ["t", "y", "x1", "p"])
def test_complex_numbers_are_a_schema_error_naming_the_column(column):
    # was: pandas counts complex dtypes numeric, and the fit cast them to float, silently
    # dropping the imaginary parts (x1 + 5j gave x1's estimates)
    df = small_log(1).assign(p=0.5)
    df[column] = df[column] + 1j
    with pytest.raises(cr.SchemaError, match=f"column '{column}': .*got dtype complex128"):
        cr.InteractionLog(df, **ROLES, propensity="p")


@pytest.mark.parametrize("device", ["mps", "meta", "xpu", "cuda:99"])
def test_device_torch_parses_but_the_fit_cannot_use_is_a_value_error(device):
    # was: torch's RuntimeError ("not linked with support for mps devices") deep in the fit
    log = cr.InteractionLog(small_log(0), **ROLES)
    with pytest.raises(ValueError, match="device"):
        cr.ItemEffectEstimator(device=device).fit(log)


def test_n_repeats_beyond_its_bound_is_a_value_error_not_a_million_fits():
    # was: n_repeats=10**6 ran a million cross-fits (a hang); n_folds had its bound already
    log = cr.InteractionLog(small_log(0), **ROLES)
    with pytest.raises(ValueError, match=r"n_repeats must be an integer in \[1, 100\] or 'auto', got 1000000"):
        cr.ItemEffectEstimator(n_repeats=10**6).fit(log)
