"""Bad bandit logs (issue 26, class 2): one extreme logged propensity moves only its own item,
weights are bounded and clipped rows counted per item, impossible propensities are an error or
a warning with a status; policy frames and mixed item labels get one-line errors."""
import warnings

import numpy as np
import pandas as pd
import pytest

import causalrec as cr

pytestmark = pytest.mark.filterwarnings("ignore:.*rows repeat another row:causalrec.exceptions.DataWarning")
from causalrec.bandit import BanditEstimator, estimate_logging_policy
from causalrec.exceptions import DataWarning
from causalrec.schema import SchemaError

ROLES = dict(item="item", outcome="y", propensity="p")
N_ITEMS = 5


def uniform_log(n=3000, seed=0, positions=None):
    """A uniformly random logging policy over N_ITEMS items: every propensity is 1 / N_ITEMS."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"item": rng.integers(0, N_ITEMS, n), "y": (rng.random(n) < 0.2).astype(int),
                       "p": np.full(n, 1 / N_ITEMS), "x": rng.normal(size=n)})
    if positions:
        df["pos"] = rng.integers(1, positions + 1, n)
    return df


def values(df, method, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # repeated rows in a small log
        return cr.estimate_item_values(df, method=method, confounders=["x"], **ROLES,
                                       **options).set_index("item")


@pytest.mark.parametrize("method", ["ipw", "snipw", "dr", "dm"])
def test_one_extreme_propensity_moves_only_its_own_item(method):
    df = uniform_log()
    bad = df.index[(df["item"] == 4) & (df["y"] == 1)][0]
    extreme = df.copy()
    extreme.loc[bad, "p"] = 1e-9
    base, got = values(df, method), values(extreme, method)
    others = base.index != 4
    cols = ["value", "se", "status", "n_shown", "ess", "n_events"]
    if method in ("ipw", "snipw"):  # every other item's value is unchanged
        pd.testing.assert_frame_equal(got.loc[others, cols], base.loc[others, cols], rtol=1e-12)
    else:  # the outcome model never sees the weights, but the propensity is part of a row's
        # content: item 4's click rows are dealt to folds anew, and the pooled outcome model
        # trained on them moves the other items by a sliver of an SE
        pd.testing.assert_frame_equal(got.loc[others, cols[2:]], base.loc[others, cols[2:]])
        moved = (got.loc[others, "value"] - base.loc[others, "value"]).abs()
        assert (moved < 0.05 * base.loc[others, "se"]).all()
    row = got.loc[4]
    assert row["n_clipped"] == 1 and row["status"] == "clipped_weights" and not row["lift_reference"]
    # the weight is bounded by the row count: its item's value moves by at most y * n / n = 1
    assert abs(row["value"] - base.loc[4, "value"]) <= 1 + 1e-12
    # the lift compares with the reference items only, and says which they are
    ref = got["lift_reference"]
    assert ref[others].all()
    np.testing.assert_allclose(got.loc[others, "lift"],
                               got.loc[others, "value"] - got.loc[ref, "value"].mean(), atol=1e-12)


def test_weights_are_clipped_at_max_weight_and_counted_per_item():
    df = uniform_log(seed=1)
    small = df.index[df["item"].isin([1, 3])][:7]
    df.loc[small, "p"] = 1e-3  # weight 1000
    cap = 50.0
    est = BanditEstimator(method="ipw", max_weight=cap).fit(df, **ROLES)
    table = est.values_.set_index("item")
    w = np.minimum(1 / df["p"], cap)
    manual = (w * df["y"]).groupby(df["item"]).sum() / len(df)
    np.testing.assert_allclose(table["value"], manual.to_numpy(), rtol=1e-12)
    expected = df.loc[small, "item"].value_counts().reindex(table.index, fill_value=0)
    np.testing.assert_array_equal(table["n_clipped"], expected.to_numpy())
    assert (table.loc[expected > 0, "status"] == "clipped_weights").all()
    assert est.max_weight_ == cap
    unbounded_est = BanditEstimator(method="ipw", max_weight=None).fit(df, **ROLES)
    unbounded = unbounded_est.values_
    assert unbounded_est.max_weight_ == np.inf
    manual = ((1 / df["p"]) * df["y"]).groupby(df["item"]).sum() / len(df)
    np.testing.assert_allclose(unbounded["value"], manual.to_numpy(), rtol=1e-12)
    assert (unbounded["n_clipped"] == 0).all()
    # a policy that puts mass on a clipped row reports it
    policy = np.zeros((len(df), N_ITEMS))
    policy[:, 1] = 1.0
    res = est.policy_value(policy).iloc[0]
    assert res["n_clipped"] == expected[1] and res["status"] == "clipped_weights"


def test_default_cap_is_the_row_count_and_leaves_plausible_logs_alone():
    df = uniform_log(seed=2)
    est = BanditEstimator(method="snipw").fit(df, **ROLES)
    assert est.max_weight_ == len(df) and (est.values_["n_clipped"] == 0).all()
    assert est.propensity_check_["plausible"].all()
    with pytest.raises(ValueError, match="max_weight"):
        BanditEstimator(max_weight=0.5).fit(df, **ROLES)


@pytest.mark.parametrize("value,match", [
    (0.0, "outside"), (-0.2, "outside"), (1.5, "outside"), (np.nan, "NaN"), (np.inf, "infinite")])
def test_impossible_propensity_of_a_shown_item_is_a_schema_error(value, match):
    df = uniform_log(n=200)
    df.loc[3, "p"] = value
    with pytest.raises(SchemaError, match=f"column 'p'.*{match}"):
        cr.estimate_item_values(df, method="ipw", **ROLES)
    with pytest.raises(SchemaError, match="column 'p'"):
        estimate_logging_policy(df, "item", "p")


@pytest.mark.parametrize("slate", [2, 3, 10])
def test_propensities_too_small_for_the_catalogue_warn_and_flag_every_item(slate):
    # a slate's probability (product over its positions) logged instead of each impression's
    df = uniform_log(seed=3).assign(p=(1 / N_ITEMS) ** slate)
    with pytest.warns(DataWarning, match="column 'p'.*mean inverse propensity"):
        est = BanditEstimator(method="ipw").fit(df, **ROLES)
    assert (est.values_["status"] == "implausible_propensity").all()
    assert not est.propensity_check_["plausible"].any()
    assert est.policy_value(np.full((len(df), N_ITEMS), 1 / N_ITEMS)).iloc[0]["status"] == \
        "implausible_propensity"


def test_implausible_propensities_at_one_position_flag_that_position_only():
    df = uniform_log(n=6000, seed=4, positions=3)
    df.loc[df["pos"] == 2, "p"] = 1 / N_ITEMS ** 2
    with pytest.warns(DataWarning, match="1 of 3 position group"):
        est = BanditEstimator(method="ipw").fit(df, position="pos", **ROLES)
    check = est.propensity_check_.set_index("pos")
    assert check["plausible"].tolist() == [True, False, True]
    by_pos = est.item_values(by_position=True)
    flagged = by_pos["status"] == "implausible_propensity"
    np.testing.assert_array_equal(flagged, by_pos["pos"] == 2)


def test_contextual_logging_policy_with_small_propensities_is_plausible():
    # a softmax policy: valid propensities down to ~1e-3; their mean inverse is at most the
    # catalogue size in expectation, so the check stays quiet
    rng = np.random.default_rng(5)
    n = 4000
    x = rng.normal(size=n)
    logits = np.outer(x, np.linspace(-3, 3, N_ITEMS))
    prop = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    shown = (prop.cumsum(1) < rng.random(n)[:, None]).sum(1)
    df = pd.DataFrame({"item": shown, "y": rng.integers(0, 2, n), "p": prop[np.arange(n), shown], "x": x})
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "column 'p'", DataWarning)
        est = BanditEstimator(method="ipw").fit(df, **ROLES)
    assert est.propensity_check_["plausible"].all()


def test_policy_frame_with_a_repeated_item_column_is_one_line_error():
    df = uniform_log(n=500)
    est = BanditEstimator(method="ipw").fit(df, **ROLES)
    policy = pd.DataFrame(np.full((len(df), N_ITEMS), 1 / N_ITEMS), columns=range(N_ITEMS))
    repeated = pd.concat([policy, policy[[2]]], axis=1)
    with pytest.raises(SchemaError, match=r"policy: item column\(s\) 2 appear more than once"):
        est.policy_value(repeated)
    multi = policy.copy()
    multi.columns = pd.MultiIndex.from_product([["item"], range(N_ITEMS)])
    with pytest.raises(SchemaError, match="policy has MultiIndex columns"):
        est.policy_value(multi)
    assert est.policy_value(policy).iloc[0]["value"] == pytest.approx(df["y"].mean(), abs=1e-12)


@pytest.mark.parametrize("labels", [[1, "1"], [0, "a"], [True, 2]])
def test_mixed_item_labels_are_a_schema_error_on_every_bandit_path(labels):
    df = uniform_log(n=300)
    df["item"] = df["item"].astype(object)
    df.loc[:1, "item"] = labels
    with pytest.raises(SchemaError, match="column 'item': mixes value types"):
        cr.estimate_item_values(df, method="ipw", **ROLES)
    with pytest.raises(SchemaError, match="column 'item': mixes value types"):
        estimate_logging_policy(df, "item", "p")
