"""Bandit-log estimators: algebraic identities on the uniform log, agreement between the two
Open Bandit Dataset logs, off-policy evaluation of BTS from random data, a simulated
confounded log with known values, and bad inputs. (notebooks/03_bandit_logs.ipynb runs in
tests/project/test_notebooks.py with the other notebooks.)"""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import causalrec as cr
from causalrec.bandit import BanditEstimator, estimate_logging_policy
from causalrec.schema import SchemaError

ROOT = Path(__file__).resolve().parents[2]
OBD = ROOT / "data" / "obd"
USER = [f"user_feature_{k}" for k in range(4)]
ROLES = dict(item="item_id", outcome="click", propensity="propensity_score", position="position")
Z = stats.norm.ppf(0.975)


@pytest.fixture(scope="module")
def random_log():
    return cr.datasets.load_open_bandit(OBD / "random_all")


@pytest.fixture(scope="module")
def bts_log():
    return cr.datasets.load_open_bandit(OBD / "bts_all")


@pytest.fixture(scope="module")
def bts_policy_on_random(random_log, bts_log):
    """BTS action probabilities per random-log row: its average per-position distribution."""
    table = estimate_logging_policy(bts_log, "item_id", "propensity_score", "position")
    return table.loc[random_log["position"]].to_numpy()


def simulate(n=20000, n_items=5, seed=0, binary=True):
    """A contextual logging policy (confounded exposure) with known per-item values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    segment = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    seg_effect = pd.Series({"a": 0.0, "b": 0.8, "c": -0.6})[segment].to_numpy()
    items = np.arange(n_items)
    logits = np.outer(x, np.linspace(-1.5, 1.5, n_items)) + 0.5 * seg_effect[:, None]
    prop = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    shown = (prop.cumsum(1) < rng.random(n)[:, None]).sum(1)
    eta = -1.0 + np.linspace(-0.5, 0.5, n_items)[None, :] + 0.9 * x[:, None] * np.linspace(1, -1, n_items) \
        + seg_effect[:, None]
    mean = 1 / (1 + np.exp(-eta)) if binary else eta
    y_all = rng.binomial(1, mean) if binary else mean + rng.normal(size=mean.shape)
    df = pd.DataFrame({"item": items[shown], "y": y_all[np.arange(n), shown],
                       "p": prop[np.arange(n), shown], "x": x, "segment": segment})
    return df, pd.Series(mean.mean(0), index=items), prop


# ---------------------------------------------------------------------- loader
def test_load_open_bandit(random_log, bts_log):
    for log in (random_log, bts_log):
        assert log.shape == (10000, 89)
        assert set(log["position"]) == {1, 2, 3} and log["item_id"].nunique() == 80
        assert set(log["click"]) == {0, 1}
        assert all(log[c].map(type).eq(str).all() for c in USER)
        assert isinstance(log["timestamp"].dtype, pd.DatetimeTZDtype)
    assert np.allclose(random_log["propensity_score"], 1 / 80)
    same, items = cr.datasets.load_open_bandit(OBD / "random_all" / "all.csv", item_context=True)
    pd.testing.assert_frame_equal(same, random_log)
    assert len(items) == 80 and "item_feature_0" in items
    with pytest.raises(FileNotFoundError):
        cr.datasets.load_open_bandit(OBD / "no_such_policy")


# ---------------------------------------------------------------------- uniform log identities
def test_weighting_on_uniform_log_equals_click_rates(random_log):
    clicks = random_log.groupby("item_id")["click"].agg(["sum", "size"])
    rate = clicks["sum"] / clicks["size"]
    sn = cr.estimate_item_values(random_log, method="snipw", se_floor=False, **ROLES)
    ipw = cr.estimate_item_values(random_log, method="ipw", **ROLES)
    # propensities are all 1/80: self-normalised weighting is the per-item click rate,
    # Horvitz-Thompson is clicks / (n / 80)
    np.testing.assert_allclose(sn["value"], rate.to_numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(ipw["value"], clicks["sum"].to_numpy() * 80 / len(random_log), atol=1e-14)
    # the linearised SNIPW variance is the binomial one (with an n / (n - 1) correction)
    n = len(random_log)
    binomial = np.sqrt(rate * (1 - rate) / clicks["size"] * n / (n - 1))
    np.testing.assert_allclose(sn["se"], binomial.to_numpy(), rtol=1e-10, atol=1e-15)
    # effect against a uniformly random item: value minus the catalogue mean
    np.testing.assert_allclose(ipw["lift"], ipw["value"] - ipw["value"].mean(), atol=1e-14)
    assert (sn["n_shown"].to_numpy() == clicks["size"].to_numpy()).all()
    np.testing.assert_allclose(sn["ess"], clicks["size"].to_numpy())
    by_pos = cr.estimate_item_values(random_log, method="snipw", by_position=True, **ROLES)
    cell = random_log.groupby(["item_id", "position"])["click"].mean()
    merged = by_pos.set_index(["item", "position"])["value"].loc[cell.index]
    np.testing.assert_allclose(merged.to_numpy(), cell.to_numpy(), atol=1e-14)


def test_logging_policy_recovers_the_uniform_policy(random_log, bts_log):
    uniform = estimate_logging_policy(random_log, "item_id", "propensity_score", "position")
    np.testing.assert_allclose(uniform.to_numpy(), 1 / 80, atol=1e-15)
    bts = estimate_logging_policy(bts_log, "item_id", "propensity_score", "position")
    np.testing.assert_allclose(bts.sum(axis=1), 1.0)
    assert bts.shape == (3, 80) and (bts.to_numpy() >= 0).all()


def test_logging_policy_is_exact_for_a_stationary_policy():
    df, _, prop = simulate(n=3000, seed=3)
    df["p"] = np.tile(prop.mean(0), (len(df), 1))[np.arange(len(df)), df["item"]]  # context-free
    table = estimate_logging_policy(df, "item", "p")
    np.testing.assert_allclose(table.loc["all"].to_numpy(), prop.mean(0) / prop.mean(0).sum(), rtol=1e-12)


# ---------------------------------------------------------------------- real-data checks
@pytest.mark.parametrize("method", ["ipw", "dr"])
def test_bts_item_values_agree_with_random_click_rates(random_log, bts_log, method):
    """Two independent logs of the same week: per-item values from the BTS log against the
    random log's click rates. For items shown >= 100 times by BTS the standardised
    difference should fall inside +-1.96 about 95% of the time; with ~24 items, a share
    below 0.85 has binomial probability ~3% if the intervals are calibrated."""
    rates = cr.estimate_item_values(random_log, method="snipw", **ROLES)
    values = cr.estimate_item_values(bts_log, method=method, confounders=USER, **ROLES)
    z = (values["value"] - rates["value"]) / np.hypot(values["se"], rates["se"])
    used = values["n_shown"] >= 100
    assert used.sum() >= 20
    share = float((z[used].abs() <= Z).mean())
    assert share >= 0.85, f"only {share:.2f} of {used.sum()} items inside +-1.96"
    assert stats.binom.cdf(round(share * used.sum()), used.sum(), 0.95) > 0.01
    # no systematic shift between the logs (t-test of the mean difference)
    assert abs(z[used].mean()) <= 2.58 * z[used].std() / np.sqrt(used.sum())


@pytest.mark.parametrize("method", ["ipw", "snipw", "dr"])
def test_bts_policy_value_from_random_log(random_log, bts_log, bts_policy_on_random, method):
    """OBP's check: the value of BTS estimated off-policy from the random log against BTS's
    on-policy click rate (itself an estimate with standard error sd(click) / sqrt(n))."""
    truth = bts_log["click"].mean()
    truth_se = bts_log["click"].std() / np.sqrt(len(bts_log))
    res = cr.estimate_policy_value(random_log, bts_policy_on_random, method=method,
                                   confounders=USER, **ROLES).iloc[0]
    assert res["status"] == "ok" and res["unsupported_mass"] == 0
    assert res["ci_low"] <= truth <= res["ci_high"]
    relative_error = abs(res["value"] - truth) / truth
    bound = Z * np.hypot(res["se"], truth_se) / truth   # both sides are noisy estimates
    assert relative_error <= bound, (relative_error, bound)
    assert res["se"] < truth  # the CI is informative: it excludes zero


def test_logging_policy_evaluated_on_its_own_log_is_the_mean_outcome(random_log):
    uniform = np.full((len(random_log), 80), 1 / 80)
    for method in ("ipw", "snipw"):
        res = cr.estimate_policy_value(random_log, uniform, method=method, **ROLES).iloc[0]
        assert res["value"] == pytest.approx(random_log["click"].mean(), abs=1e-14)


# ---------------------------------------------------------------------- simulated truth
@pytest.mark.parametrize("binary", [True, False])
def test_simulated_confounded_log_recovers_item_values(binary):
    df, truth, _ = simulate(binary=binary)
    naive = df.groupby("item")["y"].mean()
    for method in ("ipw", "snipw", "dr", "dm"):
        est = cr.estimate_item_values(df, item="item", outcome="y", propensity="p",
                                      confounders=["x", "segment"], method=method)
        z = (est["value"].to_numpy() - truth.to_numpy()) / est["se"].to_numpy()
        assert np.all(np.abs(z) < 4), (method, z)
        assert (est["status"] == "ok").all()
        ate_truth = truth - truth.mean()
        assert np.all(np.abs(est["lift"].to_numpy() - ate_truth.to_numpy()) < 4 * est["lift_se"].to_numpy())
    se = est["se"].to_numpy()
    assert np.max(np.abs(naive.to_numpy() - truth.to_numpy()) / se) > 6  # confounding is real


def test_item_values_are_values_of_one_item_policies():
    df, _, _ = simulate(n=2000, seed=1)
    roles = dict(item="item", outcome="y", propensity="p", confounders=["x", "segment"])
    est = BanditEstimator(method="dr").fit(df, **roles)
    for method in ("ipw", "snipw", "dr", "dm"):
        values = est.item_values(method=method)
        for k, item in enumerate(est.items_):
            one_hot = np.zeros((len(df), len(est.items_)))
            one_hot[:, k] = 1.0
            res = est.policy_value(one_hot, method=method).iloc[0]
            row = values.iloc[k]
            assert res["value"] == pytest.approx(row["value"], abs=1e-12)
            assert res["se"] == pytest.approx(row["se"], abs=1e-12)
            assert res["ess"] == pytest.approx(row["ess"], rel=1e-12)


def test_method_override_reuses_the_fit():
    df, _, _ = simulate(n=2000, seed=4)
    roles = dict(item="item", outcome="y", propensity="p", confounders=["x", "segment"])
    dr = BanditEstimator(method="dr").fit(df, **roles)
    for method in ("ipw", "snipw", "dm"):
        own = BanditEstimator(method=method).fit(df, **roles).values_
        pd.testing.assert_frame_equal(dr.item_values(method=method), own, rtol=1e-12)
    with pytest.raises(ValueError, match="needs the outcome model"):
        BanditEstimator(method="ipw").fit(df, **roles).item_values(method="dr")


def test_policy_formats_and_chunking_agree():
    df, _, prop = simulate(n=3000, seed=2)
    roles = dict(item="item", outcome="y", propensity="p", confounders=["x", "segment"])
    est = BanditEstimator(method="dr").fit(df, **roles)
    small = BanditEstimator(method="dr", chunk_rows=7).fit(df, **roles)
    pd.testing.assert_frame_equal(est.values_, small.values_, rtol=1e-10)
    # a top-2 policy as sparse ids/probs, as a dense array and as a DataFrame
    order = np.argsort(-prop, axis=1)[:, :2]
    probs = np.tile([0.7, 0.3], (len(df), 1))
    dense = np.zeros_like(prop)
    np.put_along_axis(dense, order, probs, axis=1)
    frame = pd.DataFrame(dense[:, ::-1], columns=est.items_[::-1])
    results = [est.policy_value((order, probs)), est.policy_value(dense), est.policy_value(frame),
               small.policy_value((order, probs))]
    for other in results[1:]:
        pd.testing.assert_frame_equal(results[0], other, rtol=1e-10)


def test_item_position_segments_and_by_position(random_log):
    est = BanditEstimator(method="dr", outcome_segments="item_position").fit(random_log, **ROLES)
    assert est.outcome_coef_[0].shape[0] == 80 * 3
    by_pos = est.item_values(by_position=True)
    assert len(by_pos) == 240 and set(by_pos["position"]) == {1, 2, 3}
    # overall values are the position-share weighted mean of the per-position values
    share = random_log["position"].value_counts(normalize=True)
    weighted = (by_pos.assign(w=by_pos["position"].map(share)).eval("value * w")
                .groupby(by_pos["item"]).sum())
    np.testing.assert_allclose(weighted.to_numpy(), est.values_["value"].to_numpy(), atol=1e-12)
    text = str(est.summary())
    assert "DR" in text and "Item status" in text


# ---------------------------------------------------------------------- bad inputs
def test_bad_propensities_name_the_column(random_log):
    zero = random_log.assign(propensity_score=random_log["propensity_score"].where(
        random_log.index != 5, 0.0))
    with pytest.raises(SchemaError, match="propensity_score"):
        cr.estimate_item_values(zero, method="ipw", **ROLES)
    missing = random_log.assign(propensity_score=random_log["propensity_score"].where(
        random_log.index % 1000 != 0))
    with pytest.raises(SchemaError, match="propensity_score.*10 NaN"):
        cr.estimate_item_values(missing, method="ipw", **ROLES)
    with pytest.raises(SchemaError, match="propensity"):
        cr.estimate_item_values(random_log, item="item_id", outcome="click", propensity=None)
    with pytest.raises(SchemaError, match="no_such_column"):
        cr.estimate_item_values(random_log, method="ipw", confounders=["no_such_column"], **ROLES)


def test_bad_policies(random_log):
    est = BanditEstimator(method="ipw").fit(random_log, **ROLES)
    n = len(random_log)
    ids, probs = np.tile([0, 1, 999], (n, 1)), np.full((n, 3), 1 / 3)
    with pytest.raises(ValueError, match="not in the catalogue: 999"):
        est.policy_value((ids, probs))
    with pytest.raises(ValueError, match="not in the catalogue: 'x'"):
        est.policy_value(pd.DataFrame({0: np.ones(n), "x": np.zeros(n)}))
    bad = np.full((n, 80), 1 / 80)
    bad[[3, 10, 42]] *= 1.5
    with pytest.raises(ValueError, match="3 of 10000 rows do not"):
        est.policy_value(bad)
    with pytest.raises(ValueError, match="shape"):
        est.policy_value(np.full((n, 79), 1 / 79))
    with pytest.raises(ValueError, match="non-negative"):
        est.policy_value((np.tile([0, 1], (n, 1)), np.tile([1.5, -0.5], (n, 1))))


def test_bad_parameters(random_log):
    with pytest.raises(ValueError, match="method"):
        cr.estimate_item_values(random_log, method="magic", **ROLES)
    with pytest.raises(ValueError, match="by_position"):
        BanditEstimator(method="ipw").fit(random_log, item="item_id", outcome="click",
                                          propensity="propensity_score").item_values(by_position=True)
    with pytest.raises(SchemaError, match="missing from items"):
        cr.estimate_item_values(random_log, method="ipw", items=range(40), **ROLES)
    with pytest.raises(RuntimeError, match="not fitted"):
        BanditEstimator().summary()


def test_item_never_shown_is_flagged(random_log):
    est = BanditEstimator(method="ipw").fit(random_log, items=range(81), **ROLES)
    row = est.values_.set_index("item").loc[80]
    assert row["status"] == "not_shown" and np.isnan(row["value"]) and row["n_shown"] == 0
    policy = np.zeros((len(random_log), 81))
    policy[:, 80] = 1.0
    assert est.policy_value(policy).iloc[0]["status"] == "unsupported"


def test_missing_indicator_in_the_outcome_model():
    """missing="indicator": a context with missing x gives the values of the log filled by
    hand (the median of the observed x) with the 0/1 indicator as a context column of its
    own (one fold: the folds hash the context's values); without it the error names it."""
    from causalrec.estimate.missing_values import indicator_name
    df, _, _ = simulate(n=3000, seed=5)
    df["x"] = df["x"].mask(np.arange(len(df)) % 4 == 0)
    roles = dict(item="item", outcome="y", propensity="p", confounders=["x", "segment"])
    with pytest.raises(SchemaError, match="column 'x'.*pass missing='indicator'"):
        cr.estimate_item_values(df, **roles)
    got = cr.estimate_item_values(df, **roles, n_folds=1, missing="indicator")
    flag = indicator_name("x")
    by_hand = df.assign(x=df["x"].fillna(df["x"].median()), **{flag: df["x"].isna().astype(float)})
    expected = cr.estimate_item_values(by_hand, **{**roles, "confounders": ["x", flag, "segment"]},
                                       n_folds=1)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9)
    est = BanditEstimator(missing="indicator").fit(df, **roles)
    assert flag in est.design_columns_ and (est.values_["status"] == "ok").all()


def test_rows_equal_but_for_their_propensity_keep_their_folds_when_shuffled(bts_log):
    """The logged propensity is part of a row's content for its fold: on Open Bandit's
    coarse contexts (hashed user features) many rows agree on item, position, features and
    click but not on the propensity; dealt by row order they moved folds under a shuffle
    (2,490 of 6,000) and item values by up to 0.16 SE."""
    conf = ["user_feature_0", "user_feature_1"]
    df = bts_log[["item_id", "position", "click", "propensity_score", *conf]].iloc[:6000]
    fit = lambda d: BanditEstimator(seed=0).fit(d, "item_id", "click", "propensity_score",
                                                 "position", conf)
    a, b = fit(df), fit(df.sample(frac=1.0, random_state=3))
    moved = a.fold_ != b.fold_.loc[a.fold_.index]
    assert df.duplicated(keep=False)[moved].all()  # only exact copies move
    va, vb = (e.values_.set_index("item") for e in (a, b))
    np.testing.assert_allclose(vb.loc[va.index, "value"], va["value"], rtol=0, atol=1e-10 * va["se"].max())
