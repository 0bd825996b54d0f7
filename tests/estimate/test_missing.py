"""Missing values in numeric confounders (``InteractionLog(missing="indicator")``): the
missing-indicator method recovers the effects where missingness confounds, where dropping
the rows or filling them without an indicator does not; the fill and the indicators are
facts of the fitted rows, fixed at fit."""
import warnings

import numpy as np
import pandas as pd
import pytest

import causalrec as cr
from causalrec.estimate.design import DesignSpec
from causalrec.estimate.missing_values import MISSING, indicator_name
from causalrec.exceptions import DataWarning
from causalrec.schema import SchemaError

ROLES = dict(item="item", treatment="t", outcome="y", confounders=["x", "hour"])


def simulate(seed=0, n_items=30, rows=2000, share_missing=0.3, lift=0.4):
    """New users (share_missing of the rows) have no x: they are recommended more, have a
    higher baseline and respond ``lift`` more to a recommendation. The other users' x
    confounds. Returns the log and each item's true average effect over all its rows."""
    rng = np.random.default_rng(seed)
    item = np.repeat(np.arange(n_items), rows)
    new = rng.random(len(item)) < share_missing
    x = np.where(new, 0.0, rng.standard_normal(len(item)))
    hour = rng.integers(0, 24, len(item)).astype(float)  # observed everywhere, no effect
    t = (rng.random(len(item)) < 1 / (1 + np.exp(-(-0.5 + new + 0.6 * x)))).astype(int)
    tau = rng.uniform(0.1, 0.6, n_items)
    y = new + 0.7 * x + (tau[item] + lift * new) * t + rng.standard_normal(len(item))
    truth = tau + lift * np.bincount(item, weights=new) / np.bincount(item)
    df = pd.DataFrame({"item": item, "x": np.where(new, np.nan, x), "hour": hour, "t": t, "y": y})
    return df, truth


@pytest.fixture(scope="module")
def confounded():
    return simulate()


def _effects(df, **roles):
    log = cr.InteractionLog(df, **{**ROLES, **roles})
    return cr.ItemEffectEstimator(dtype="float64").fit(log)


def _mean_z(eff, truth):
    return float(np.mean((eff["ate"].to_numpy() - truth) / eff["se"].to_numpy()))


def test_the_indicator_recovers_effects_that_dropping_or_filling_rows_biases(confounded):
    """30 items of 2,000 rows, 30% of them new users: with the indicator the mean z of the
    truth is within 3 / sqrt(30) of 0 and coverage within 3 binomial SDs of 0.95. Dropping
    the new users estimates the old users' effect (mean z -2.0 here), filling x with its
    median without an indicator leaves their confounding (+4.7): both beyond that band."""
    df, truth = confounded
    eff = _effects(df, missing="indicator").effects_
    assert (eff["status"] == "ok").all()
    band = 3 / np.sqrt(len(truth))
    assert abs(_mean_z(eff, truth)) <= band
    covered = ((eff["ci_low"] <= truth) & (truth <= eff["ci_high"])).mean()
    assert covered >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / len(truth))
    dropped = _effects(df.dropna()).effects_
    filled = _effects(df.fillna({"x": df["x"].median()})).effects_
    assert _mean_z(dropped, truth) < -band and _mean_z(filled, truth) > band


def test_a_log_without_missing_values_gives_the_same_estimates(confounded):
    df = confounded[0].dropna()
    plain, flagged = _effects(df), _effects(df, missing="indicator")
    assert flagged.design_spec_.indicators == [] and plain.design_spec_.fill == {}
    assert flagged.design_columns_ == plain.design_columns_
    for col in ("ate", "se", "ci_low", "ci_high"):
        np.testing.assert_allclose(flagged.effects_[col], plain.effects_[col], rtol=1e-12, atol=0)


def test_fill_and_indicators_ignore_row_order_and_are_fixed_at_fit(confounded):
    df = confounded[0].iloc[:6000]
    spec = DesignSpec.from_log(cr.InteractionLog(df, **ROLES, missing="indicator"))
    x = df["x"].to_numpy()
    assert spec.fill == {"x": float(np.median(x[~np.isnan(x)])),
                         "hour": float(df["hour"].median())}
    assert spec.indicators == ["x"]
    assert spec.columns == ["x", indicator_name("x"), "hour"] and indicator_name("x") == f"x={MISSING}"
    shuffled = df.sample(frac=1.0, random_state=5)
    again = DesignSpec.from_log(cr.InteractionLog(shuffled, **ROLES, missing="indicator"))
    assert again.fill == spec.fill and again.indicators == spec.indicators
    np.testing.assert_allclose(again.center, spec.center, rtol=1e-12)
    np.testing.assert_allclose(again.scale, spec.scale, rtol=1e-12)
    # new rows (e.g. scored later) take the fit's fill, not their own median; a missing
    # value in a column fitted without one is filled too
    new = pd.DataFrame({"x": [np.nan, 5.0], "hour": [np.nan, 3.0]})
    X = spec.transform(new, dtype=np.float64, standardise=False).X
    np.testing.assert_array_equal(X, [[spec.fill["x"], 1.0, spec.fill["hour"]], [5.0, 0.0, 3.0]])
    # shards of the rows give the whole frame's design rows
    whole = spec.transform(df, dtype=np.float64).X
    parts = [spec.transform(df.iloc[a:a + 1000], dtype=np.float64).X for a in range(0, 6000, 1000)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_nullable_integers_and_float32_columns_are_filled(confounded):
    df = confounded[0].iloc[:4000].copy()
    df["x"] = df["x"].astype(np.float32)
    df["hour"] = df["hour"].astype("Int64")
    df.loc[df.index[::7], "hour"] = pd.NA
    spec = DesignSpec.from_log(cr.InteractionLog(df, **ROLES, missing="indicator"))
    assert spec.indicators == ["x", "hour"]
    X = spec.transform(df, dtype=np.float64, standardise=False).X
    assert np.isfinite(X).all()
    assert (X[::7, spec.columns.index(indicator_name("hour"))] == 1).all()


def test_missing_values_raise_with_the_remedy_and_infinite_ones_always_raise(confounded):
    df = confounded[0]
    with pytest.raises(SchemaError, match=r"column 'x': \d+ NaN \(missing\) values; "
                                          r"pass missing='indicator'"):
        cr.InteractionLog(df, **ROLES)
    bad = df.assign(x=df["x"].fillna(np.inf).where(df.index > 0))
    with pytest.raises(SchemaError, match=r"column 'x': \d+ infinite values \(and 1 NaN\)"):
        cr.InteractionLog(bad, **ROLES, missing="indicator")
    with pytest.raises(SchemaError, match="column 'y': 1 NaN"):  # the outcome is never filled
        cr.InteractionLog(df.assign(y=df["y"].where(df.index > 0)), **ROLES, missing="indicator")
    with pytest.raises(ValueError, match="missing must be one of"):
        cr.InteractionLog(df, **ROLES, missing="drop")


def test_the_option_travels_with_the_roles_and_balance_reads_the_design(confounded):
    df = confounded[0].iloc[:8000]
    log = cr.InteractionLog(df, **ROLES, missing="indicator")
    assert cr.InteractionLog.from_roles(df, log.roles).missing == "indicator"
    table = cr.estimate_item_effects(df, **ROLES, missing="indicator", dtype="float64")
    fit = _effects(df, missing="indicator")
    np.testing.assert_allclose(table["ate"], fit.effects_["ate"], rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        balance = fit.covariate_balance()
    flag = balance[balance["column"] == indicator_name("x")]
    assert len(flag) == len(fit.effects_) and np.isfinite(balance["smd_weighted"]).all()
    # new users are recommended more: the indicator is off balance before weighting only
    assert flag["smd_unweighted"].abs().min() > 0.1 > flag["smd_weighted"].abs().max()
