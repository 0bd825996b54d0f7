"""The shared frequentist arithmetic against scipy and known values."""
import numpy as np
import pytest
from scipy import stats

from causalrec.inference import benjamini_hochberg, critical_value, interval, mean_and_se, p_value


def test_critical_values_are_t_with_dof_and_normal_without():
    assert critical_value(0.05) == pytest.approx(1.959964, abs=1e-6)
    np.testing.assert_allclose(critical_value(0.05, [1, 9, 1e6]),
                               stats.t.ppf(0.975, [1, 9, 1e6]), rtol=1e-12)
    # missing degrees of freedom mean the normal quantile, element by element
    np.testing.assert_allclose(critical_value(0.1, [np.nan, 4]), [stats.norm.ppf(0.95), stats.t.ppf(0.95, 4)])


def test_interval_and_p_value_agree():
    est, se, dof = np.array([0.3, -1.2, 0.0]), np.array([0.1, 0.5, 0.2]), np.array([5, 30, 12])
    low, high = interval(est, se, 0.05, dof)
    np.testing.assert_allclose(high - low, 2 * stats.t.ppf(0.975, dof) * se)
    p = p_value(est, se, dof)
    np.testing.assert_allclose(p, 2 * stats.t.sf(np.abs(est / se), dof))
    # an estimate on the interval's edge has p = alpha
    assert p_value(high[0] - est[0], se[0], dof[0]) == pytest.approx(0.05, rel=1e-9)
    assert p_value(1.96, 1.0) == pytest.approx(0.05, abs=1e-4) and isinstance(p_value(1.0, 1.0), float)
    assert np.isnan(p_value(0.0, 0.0))


def test_benjamini_hochberg_matches_scipy_and_skips_missing():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=50) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p))
    q = benjamini_hochberg(np.r_[p[:5], np.nan], mask=[True, True, False, True, True, True])
    assert np.isnan(q[[2, 5]]).all()
    np.testing.assert_allclose(q[[0, 1, 3, 4]], stats.false_discovery_control(p[[0, 1, 3, 4]]))


def test_mean_and_se():
    mean, se = mean_and_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert np.isnan(mean_and_se([1.0])[1]) and np.isnan(mean_and_se([])[0])


@pytest.mark.parametrize("alpha", [1.5, 0, 1, -0.1, np.nan, "0.05", None, True])
def test_alpha_outside_zero_one_is_a_value_error_naming_it(alpha):
    # was: 1.5 swapped the limits, 0 gave infinite ones, -1 NaN, "x" a TypeError from "/"
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\), got"):
        interval(0.1, 0.02, alpha)
    with pytest.raises(ValueError, match="alpha must be"):
        critical_value(alpha, [3.0])
