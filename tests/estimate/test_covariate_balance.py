"""covariate_balance: standardised mean differences between the arms before and after
inverse-propensity weighting, against a direct computation, and the report's verdict on a
right and a wrong propensity."""
import numpy as np
import pandas as pd
import pytest

import causalrec as cr
from causalrec.estimate.diagnostics import SMD_BALANCED, balance_overview
from causalrec.reporting.nuisance_section import nuisance_html


def _roles(sim):
    return {k: v for k, v in {**sim.roles, "text": None}.items() if v is not None}


@pytest.fixture(scope="module")
def sim():
    return cr.datasets.simulate_log(n_items=12, n_rows=24_000, text_confounding=0.0,
                                    popularity_skew=0.5, seed=11)


def _smd(x, t, w, sd):
    mean = lambda arm: np.average(x[t == arm], weights=w[t == arm])
    return (mean(1) - mean(0)) / sd


def test_balance_matches_a_direct_computation(sim):
    roles = _roles(sim)  # segments: item x user group (a key is no confounder)
    roles = dict(roles, item=[roles["item"], "user_group"],
                 categorical=[c for c in roles["categorical"] if c != "user_group"])
    est = cr.ItemEffectEstimator().fit(cr.InteractionLog(sim.data, **roles))
    balance = est.covariate_balance()
    assert list(balance.columns[:3]) == ["item", "user_group", "status"]
    levels = sorted(sim.data["device"].unique())
    assert set(balance["column"]) == {*roles["confounders"],
                                      *(f"device={v}" for v in levels)}
    df, e = sim.data, est.propensity_.to_numpy()
    checked = 0
    for (item, group), rows in df.groupby(roles["item"]):
        rows = rows.index.to_numpy()
        t = df.loc[rows, roles["treatment"]].to_numpy()
        if not np.isfinite(e[rows]).all() or t.min() == t.max():
            continue
        w = np.where(t == 1, 1 / e[rows], 1 / (1 - e[rows]))
        for column in ("tenure", f"device={levels[0]}"):
            x = (df.loc[rows, "tenure"].to_numpy(float) if column == "tenure"
                 else (df.loc[rows, "device"] == levels[0]).to_numpy(float))
            sd = np.sqrt((x[t == 1].var() + x[t == 0].var()) / 2)
            got = balance[(balance["item"] == item) & (balance["user_group"] == group)
                          & (balance["column"] == column)].iloc[0]
            np.testing.assert_allclose(got["smd_unweighted"], _smd(x, t, np.ones(len(t)), sd),
                                       rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(got["smd_weighted"], _smd(x, t, w, sd), rtol=1e-9,
                                       atol=1e-12)
            ess = lambda v: v.sum() ** 2 / (v ** 2).sum()
            np.testing.assert_allclose(got["smd_noise"],
                                       np.sqrt(1 / ess(w[t == 1]) + 1 / ess(w[t == 0])), rtol=1e-9)
            checked += 1
    assert checked >= 30


def _with_propensity(sim, values):
    data = sim.data.assign(logged=values)
    est = cr.ItemEffectEstimator(clip=0.001).fit(
        cr.InteractionLog(data, **_roles(sim), propensity="logged"))
    return est, est.covariate_balance()


def test_the_true_propensity_balances_and_a_flat_one_does_not(sim):
    """Weighted by the logging policy's own propensities, an item's weighted SMD is chance:
    SMD / smd_noise is about standard normal, so its mean square over the 12 x 8 pairs is
    about 1 (its SD about 0.15 for independent pairs; the levels of one categorical are not
    independent, so the bound is 2). Unweighted, the activity confounder is far off on every
    item. A flat propensity (0.5 everywhere) weights nothing: the weighted SMD is the
    unweighted one and the overview counts the pairs off balance; with the true one none."""
    est, balance = _with_propensity(sim, sim.data["propensity"])
    z = (balance["smd_weighted"] / balance["smd_noise"]).to_numpy()
    assert np.mean(z ** 2) <= 2.0
    activity = balance[balance["column"] == "user_activity"]
    assert (activity["smd_unweighted"].abs() > 3 * activity["smd_noise"]).all()
    assert balance_overview(balance)["items_imbalanced"].sum() == 0
    assert "The weights balance the confounders" in nuisance_html(est)
    assert "Weighted balance (ok items):" in str(est.summary())
    assert f"0 of {len(balance)} item-column pairs off" in str(est.summary())

    est, flat = _with_propensity(sim, 0.5)
    np.testing.assert_allclose(flat["smd_weighted"], flat["smd_unweighted"], rtol=1e-9)
    overview = balance_overview(flat).set_index("column")
    assert overview.loc["user_activity", "items_imbalanced"] == 12
    assert overview.loc["user_activity", "median_abs_smd_weighted"] > SMD_BALANCED
    assert "The weights leave some confounders imbalanced" in nuisance_html(est)
    off = int(balance_overview(flat)["items_imbalanced"].sum())
    assert f"{off} of {len(flat)} item-column pairs off" in str(est.summary())


def test_a_column_that_separates_the_arms_is_infinitely_off():
    rng = np.random.default_rng(0)
    n = 400
    t = rng.integers(0, 2, n)
    df = pd.DataFrame({"item": np.repeat(["a", "b"], n // 2), "t": t,
                       "y": rng.normal(size=n), "x": rng.normal(size=n),
                       "flag": np.where(np.arange(n) < n // 2, t, 1.0)})
    est = cr.ItemEffectEstimator().fit(cr.InteractionLog(df, item="item", treatment="t",
                                                         outcome="y", confounders=["x", "flag"]))
    b = est.covariate_balance().set_index(["item", "column"])
    assert np.isinf(b.loc[("a", "flag"), "smd_unweighted"])  # flag = t on item a
    assert b.loc[("b", "flag"), "smd_unweighted"] == 0  # constant on item b: balanced
