"""``estimand="conditional"``: intervals for the average effect over the logged rows'
confounders as they are (the truth of IHDP-style benchmarks and of "what did recommending do
to these users"), against the default population intervals."""
import warnings

import numpy as np
import pandas as pd
import pytest

import causalrec as cr


def heterogeneous_log(seed, n_items=40, rows=2000):
    """Effect 1 + 2.5 x (x ~ N(0, 1)), confounded by x; unit noise. Per item the truth given
    its rows is 1 + 2.5 mean(x); Var(tau) = 6.25 against ~4.6 for the residual part of the
    AIPW influence values, so population intervals are ~1.5x the conditional ones."""
    rng = np.random.default_rng(seed)
    item = np.repeat(np.arange(n_items), rows)
    x = rng.standard_normal(len(item))
    t = (rng.random(len(item)) < 1 / (1 + np.exp(-(0.5 * x - 0.5)))).astype(int)
    tau = 1 + 2.5 * x
    y = x + t * tau + rng.standard_normal(len(item))
    truth = pd.Series(tau).groupby(item).mean().to_numpy()
    return pd.DataFrame({"item": item, "x": x, "t": t, "y": y}), truth


def _fit(df, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log = cr.InteractionLog(df, item="item", treatment="t", outcome="y", confounders=["x"])
        return cr.ItemEffectEstimator(n_repeats=1, **options).fit(log)


def test_conditional_intervals_are_calibrated_for_the_logged_rows_truth():
    """120 items (3 logs): z = (ate - truth) / se against the truth given each item's rows.
    Conditional: SD of z within 1 +- 3 / sqrt(2 * 120) and coverage within 3 binomial SDs of
    0.95. Population: the same estimates, z SD ~0.65 (its variance holds Var(tau) / n, which
    is no error for this truth), so it is measurably over-wide."""
    z = {"population": [], "conditional": []}
    covered = []
    for seed in range(3):
        df, truth = heterogeneous_log(seed)
        pop, cond = (_fit(df, estimand=e).effects_ for e in ("population", "conditional"))
        np.testing.assert_array_equal(pop.ate, cond.ate)
        z["population"].append((pop.ate - truth) / pop.se)
        z["conditional"].append((cond.ate - truth) / cond.se)
        covered.append((cond.ci_low <= truth) & (truth <= cond.ci_high))
    n = 120
    sd = {k: np.concatenate(v).std() for k, v in z.items()}
    assert abs(sd["conditional"] - 1) <= 3 / np.sqrt(2 * n), sd
    assert sd["population"] < 1 - 3 / np.sqrt(2 * n), sd
    coverage = np.concatenate(covered).mean()
    assert abs(coverage - 0.95) <= 3 * np.sqrt(0.95 * 0.05 / n), coverage


def test_without_effect_heterogeneity_both_intervals_agree():
    """A constant effect: tau's spread is 0, so the two variances differ only by the fitted
    outcome models' noise (a few percent)."""
    rng = np.random.default_rng(1)
    item = np.repeat(np.arange(10), 2000)
    x = rng.standard_normal(len(item))
    t = (rng.random(len(item)) < 1 / (1 + np.exp(-x))).astype(int)
    df = pd.DataFrame({"item": item, "x": x, "t": t, "y": x + 0.5 * t + rng.standard_normal(len(item))})
    pop, cond = (_fit(df, estimand=e).effects_ for e in ("population", "conditional"))
    np.testing.assert_allclose(cond.se, pop.se, rtol=0.05)


def test_conditional_estimand_is_reported_and_needs_outcome_models():
    df, _ = heterogeneous_log(0, n_items=3, rows=500)
    est = _fit(df, estimand="conditional")
    assert est.effects_.attrs["estimand"] == "conditional"
    assert "logged users' average effect" in str(est.summary())
    assert "estimand=&#x27;conditional&#x27;" in cr.EffectReport(est).to_html()
    with pytest.raises(ValueError, match="needs outcome models"):
        _fit(df, estimand="conditional", method="ipw")
    with pytest.raises(ValueError, match="estimand"):
        _fit(df, estimand="sample")
