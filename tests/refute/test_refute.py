import numpy as np
import pandas as pd
import pytest
from scipy import stats

from causalrec import estimate_item_effects
from causalrec.datasets import simulate_log
from causalrec.refute import (deep_dive, e_value, refute_item_effects, robustness_value,
                              sensitivity, summarize_refutations)
from causalrec.refute.local import permute_within, subsample_within

# Placebo shares are sharpest on items with many rows per arm (the per-item t intervals are
# asymptotic), hence min_rows_per_arm.
MIN_ROWS = 50
N_SUBSETS = 3


def no_text(roles):
    return {k: v for k, v in roles.items() if k != "text"}


@pytest.fixture(scope="module")
def sim():
    # No text confounding, so the numeric and categorical confounders suffice (and no text
    # model runs); a mild popularity skew keeps most items above MIN_ROWS per arm; strong
    # effects make about half the items significant, which the placebo must undo.
    return simulate_log(n_items=120, n_rows=30_000, popularity_skew=0.3,
                        text_confounding=0.0, effect_scale=3.0, seed=11)


@pytest.fixture(scope="module")
def refutations(sim):
    return refute_item_effects(sim.data, **no_text(sim.roles), n_subsets=N_SUBSETS,
                               min_rows_per_arm=MIN_ROWS, seed=0)


@pytest.fixture(scope="module")
def small_effects():
    small = simulate_log(n_items=30, n_rows=4_000, text_confounding=0.0, seed=4)
    return small, estimate_item_effects(small.data, **no_text(small.roles))


# ----------------------------------------------------------------- helpers
def test_permute_within_keeps_each_segments_values():
    rng = np.random.default_rng(0)
    segment = rng.integers(0, 20, 2000)
    values = rng.integers(0, 2, 2000)
    permuted = permute_within(values, segment, np.random.default_rng(1))
    for s in range(20):
        assert sorted(permuted[segment == s]) == sorted(values[segment == s])
    assert (permuted != values).mean() > 0.3          # rows really moved


def test_subsample_within_takes_the_fraction_of_every_segment():
    segment = np.repeat(np.arange(5), [10, 11, 50, 1, 200])
    keep = subsample_within(segment, 0.8, np.random.default_rng(0))
    assert np.bincount(segment[keep]).tolist() == [8, 9, 40, 1, 160]
    other = subsample_within(segment, 0.8, np.random.default_rng(1))
    assert (keep != other).any()


# ----------------------------------------------------------------- refutations
def test_refutation_table_shape(sim, refutations):
    ref = refutations
    expected = {"item_id", "check", "replicate", "estimate", "se", "p_value", "status",
                "original_ate", "original_se", "shift", "shift_in_se", "passed"}
    assert expected <= set(ref.columns)
    counts = ref.groupby("check").size()
    n_items = sim.data["item_id"].nunique()
    assert counts.to_dict() == {"placebo": n_items, "random_common_cause": n_items,
                                "subset": N_SUBSETS * n_items}
    # Only items with an ok estimate (in the run, and originally unless placebo) are judged.
    assert ref.loc[ref["status"] != "ok", "passed"].isna().all()
    judged = ref[ref["passed"].notna()]
    assert judged["check"].nunique() == 3
    original_ok = judged.groupby("item_id")["original_se"].first().notna()
    assert original_ok.all()


def test_placebo_significant_share_is_about_alpha(refutations):
    summary = summarize_refutations(refutations).set_index("check")
    placebo = summary.loc["placebo"]
    n = int(placebo["n_items"])
    assert n >= 40
    # Binomial error of the share of items significant at 5% under the null.
    assert abs(placebo["share_significant"] - 0.05) <= 3 * np.sqrt(0.05 * 0.95 / n)
    assert placebo["share_ci_low"] <= placebo["share_significant"] <= placebo["share_ci_high"]
    assert placebo["placebo_ok"]
    judged = refutations[(refutations["check"] == "placebo") & refutations["passed"].notna()]
    original_p = 2 * stats.norm.sf(np.abs(judged["original_ate"] / judged["original_se"]))
    assert (original_p < 0.05).mean() > 0.25        # the real effects were there


def test_placebo_estimates_are_centred_on_zero(refutations):
    placebo = refutations[(refutations["check"] == "placebo") & refutations["passed"].notna()]
    z = placebo["estimate"] / placebo["se"]
    # mean of n roughly standard normal z-scores: within 4 / sqrt(n) of zero
    assert abs(z.mean()) < 4 / np.sqrt(len(z))
    assert 0.7 < z.std() < 1.3


def test_random_common_cause_leaves_estimates_in_place(refutations):
    rcc = refutations[(refutations["check"] == "random_common_cause")
                      & refutations["passed"].notna()]
    shift = rcc["shift_in_se"].abs()
    # The folds are kept, so a pure-noise confounder moves estimates by a small fraction of
    # their SEs (one extra ridge-penalised column in the nuisance models).
    assert shift.median() < 0.2
    assert (shift <= 0.5).mean() >= 0.9


def test_subset_stability_matches_subsampling_theory(refutations):
    summary = summarize_refutations(refutations).set_index("check").loc["subset"]
    assert summary["expected_sd_in_se"] == pytest.approx(0.5)      # sqrt(0.2 / 0.8)
    # With 3 replicates an item's sd is noisy; the median over items must be near 0.5.
    assert 0.25 < summary["median_sd_in_se"] < 0.85
    per_item = summarize_refutations(refutations, by_item=True)
    subset = per_item[per_item["check"] == "subset"]
    assert subset["n_replicates"].max() == N_SUBSETS
    assert (subset["n_passed"] <= subset["n_replicates"]).all()


def test_by_segments_and_bad_arguments(small_effects):
    small, _ = small_effects
    ref = refute_item_effects(small.data, **no_text(small.roles), by="user_group",
                              checks=("placebo",))
    assert {"item_id", "user_group"} <= set(ref.columns)
    assert len(ref) == len(small.data.groupby(["item_id", "user_group"]))
    with pytest.raises(ValueError, match="unknown checks"):
        refute_item_effects(small.data, **no_text(small.roles), checks=("nope",))
    with pytest.raises(ValueError, match="subset_fraction"):
        refute_item_effects(small.data, **no_text(small.roles), subset_fraction=1.5)


# ----------------------------------------------------------------- sensitivity
def rv_by_grid(t, dof, q, alpha):
    """RV by brute force: smallest max(R2_y, R2_d) that moves the bound to (1 - q) * ate,
    using Cinelli & Hazlett's bias and SE formulas for a confounder of given strengths."""
    grid = np.linspace(0, 0.999, 1200)
    r2y, r2d = np.meshgrid(grid, grid)
    se = 1.0
    bias = se * np.sqrt(dof) * np.sqrt(r2y * r2d / (1 - r2d))
    se_adj = se * np.sqrt((1 - r2y) / (1 - r2d) * dof / (dof - 1))
    t_crit = 0.0 if alpha is None else stats.t.ppf(1 - alpha / 2, dof - 1)
    crosses = q * abs(t) * se <= bias + t_crit * se_adj
    return np.maximum(r2y, r2d)[crosses].min()


@pytest.mark.parametrize("t, dof, q, alpha", [
    (4.0, 500, 1.0, None), (4.0, 500, 1.0, 0.05), (8.0, 200, 0.5, 0.05),
    (2.5, 1000, 1.0, 0.05), (20.0, 10, 1.0, 0.05),     # the last is the extreme case
])
def test_robustness_value_matches_brute_force(t, dof, q, alpha):
    assert robustness_value(t, dof, q, alpha) == pytest.approx(
        rv_by_grid(t, dof, q, alpha), abs=2e-3)


def test_robustness_value_zero_inside_ci():
    assert robustness_value(1.5, 1000, alpha=0.05) == 0
    assert robustness_value(0.0, 1000) == 0


def test_e_value_known_answers():
    # VanderWeele & Ding (2017): an observed risk ratio of 3.9 has E-value 7.26.
    assert e_value(3.9) == pytest.approx(3.9 + np.sqrt(3.9 * 2.9))
    assert e_value(3.9) == pytest.approx(7.26, abs=0.01)
    assert e_value(1 / 3.9) == pytest.approx(e_value(3.9))     # protective effects invert
    assert e_value(1.0) == 1.0


def synthetic_effects(ate, se=0.02, n=2000, p0=0.2):
    ate = np.asarray(ate, float)
    z = stats.norm.ppf(0.975)
    return pd.DataFrame({"item": np.arange(len(ate)), "ate": ate, "se": se,
                         "ci_low": ate - z * se, "ci_high": ate + z * se, "n": n,
                         "mu0_mean": p0, "outcome_sd": 0.4})


def test_sensitivity_monotone_in_abs_t_and_null_inside_ci():
    ate = np.linspace(-0.15, 0.15, 61)
    out = sensitivity(synthetic_effects(ate), outcome="binary")
    order = np.argsort(np.abs(out["t_stat"].to_numpy()))
    for col in ("rv", "rv_ci", "partial_r2"):
        values = out[col].to_numpy()[order]
        assert np.all(np.diff(values) >= -1e-12), col
    # A risk difference maps to an asymmetric risk ratio: E-values grow with |t| per sign.
    for sign in (1, -1):
        side = out[np.sign(out["ate"]) == sign].sort_values("ate", key=abs)
        for col in ("e_value", "e_value_ci"):
            assert np.all(np.diff(side[col].to_numpy()) >= -1e-12), col
    covers = (out["ci_low"] <= 0) & (out["ci_high"] >= 0)
    assert covers.any() and (~covers).any()
    assert (out.loc[covers, "rv_ci"] == 0).all() and (out.loc[covers, "e_value_ci"] == 1).all()
    assert (out.loc[~covers, "rv_ci"] > 0).all() and (out.loc[~covers, "e_value_ci"] > 1).all()
    assert (out["rv"] >= out["rv_ci"]).all()
    # binary: RR = (p0 + ate) / p0
    assert out["risk_ratio"].to_numpy() == pytest.approx((0.2 + ate) / 0.2)
    cont = sensitivity(synthetic_effects(ate), outcome="continuous")
    assert cont["risk_ratio"].to_numpy() == pytest.approx(np.exp(0.91 * ate / 0.4))


def test_sensitivity_on_estimates(small_effects):
    _, effects = small_effects
    out = sensitivity(effects)                 # auto: a 0/1 outcome is recognised
    binary = sensitivity(effects, outcome="binary")
    pd.testing.assert_frame_equal(out, binary)
    ok = out[out["status"] == "ok"]
    covers = (ok["ci_low"] <= 0) & (ok["ci_high"] >= 0)
    assert (ok.loc[covers, "rv_ci"] == 0).all() and (ok.loc[covers, "e_value_ci"] == 1).all()
    assert (ok.loc[~covers, "e_value_ci"] > 1).all()
    assert out.loc[out["se"].isna(), "rv"].isna().all()
    continuous = simulate_log(n_items=10, n_rows=3000, outcome="continuous",
                              text_confounding=0.0, seed=1)
    eff = estimate_item_effects(continuous.data, **no_text(continuous.roles))
    assert sensitivity(eff)["risk_ratio"].to_numpy() == pytest.approx(
        sensitivity(eff, outcome="continuous")["risk_ratio"].to_numpy(), nan_ok=True)


# ----------------------------------------------------------------- DoWhy cross-check
def test_deep_dive_agrees_with_dowhy_on_a_big_item(sim, refutations):
    big = sim.data["item_id"].value_counts().index[0]
    out = deep_dive(sim.data, big, **no_text(sim.roles), refutations=refutations,
                    num_simulations=5, min_rows_per_arm=MIN_ROWS)
    table = out.set_index(["source", "check"])
    assert set(table.index) == {(s, c) for s in ("causalrec", "dowhy")
                                for c in ("estimate", "placebo", "random_common_cause",
                                          "subset")}
    ours, theirs = table.loc[("causalrec", "estimate")], table.loc[("dowhy", "estimate")]
    assert ours["se"] > 0 and theirs["se"] > 0
    combined = np.hypot(ours["se"], theirs["se"])
    assert abs(ours["estimate"] - theirs["estimate"]) < 2 * combined
    truth = sim.truth.set_index("item").loc[big, "true_ate"]
    assert abs(ours["estimate"] - truth) < 3 * ours["se"]
    # Both placebos are near zero, in units of the original SEs.
    assert abs(table.loc[("causalrec", "placebo"), "estimate"]) < 3 * ours["se"]
    assert abs(table.loc[("dowhy", "placebo"), "estimate"]) < 3 * theirs["se"]
    with pytest.raises(ValueError, match="no rows"):
        deep_dive(sim.data, -1, **no_text(sim.roles), refutations=refutations)


def test_settings_travel_as_columns_through_a_merge(small_effects):
    """alpha and subset_fraction are columns, so a merge (which drops attrs) keeps them."""
    small, effects = small_effects
    ref = refute_item_effects(small.data, **no_text(small.roles), checks=["placebo", "subset"],
                              n_subsets=2, subset_fraction=0.5, alpha=0.2, seed=0)
    assert (ref["alpha"] == 0.2).all() and (ref["subset_fraction"] == 0.5).all()
    merged = ref.merge(effects[["item", "n"]].rename(columns={"item": "item_id"}), on="item_id")
    assert "alpha" not in merged.attrs and "subset_fraction" not in merged.attrs
    summary = summarize_refutations(merged).set_index("check")
    assert summary.loc["placebo", "expected_share"] == 0.2
    assert summary.loc["subset", "expected_sd_in_se"] == pytest.approx(1.0)  # sqrt(0.5 / 0.5)


def test_missing_indicator_is_the_policy_of_the_original_fit_and_every_refit(small_effects):
    """A log with missing tenure: with missing="indicator" the original estimates are
    ``estimate_item_effects(..., missing="indicator")`` (one split, as the refutation fits)
    and every check runs (the refits on changed rows fill them too); without it the error
    names the option. float64: float32 fits given the same folds agree to ~1e-5 only."""
    from causalrec.schema import SchemaError

    small, _ = small_effects
    roles = no_text(small.roles)
    df = small.data.assign(tenure=small.data["tenure"].mask(np.arange(len(small.data)) % 5 == 0))
    ref = refute_item_effects(df, **roles, missing="indicator", n_subsets=1, seed=2,
                              dtype="float64")
    assert set(ref["check"]) == {"placebo", "random_common_cause", "subset"}
    assert ref["estimate"].notna().any() and ref["passed"].notna().any()
    expected = estimate_item_effects(df, **roles, missing="indicator", seed=2, n_repeats=1,
                                     dtype="float64")
    original = ref[ref["check"] == "placebo"].set_index("item_id")
    np.testing.assert_allclose(original["original_ate"], expected.set_index("item")["ate"],
                               rtol=1e-8, atol=0)
    np.testing.assert_allclose(original["original_se"], expected.set_index("item")["se"],
                               rtol=1e-8, atol=0)
    with pytest.raises(SchemaError, match="column 'tenure'.*pass missing='indicator'"):
        refute_item_effects(df, **roles, checks=("placebo",))


def test_deep_dive_fills_missing_values_for_dowhy_as_causalrec_does(small_effects):
    """With missing="indicator" DoWhy gets the item's rows with the log's median fill and a
    0/1 indicator in the adjustment set (before, its estimators met NaN): its estimate is
    finite and agrees with causalrec's within two combined SEs on a big item."""
    small, _ = small_effects
    roles = no_text(small.roles)
    df = small.data.assign(tenure=small.data["tenure"].mask(np.arange(len(small.data)) % 5 == 0))
    big = df["item_id"].value_counts().index[0]
    out = deep_dive(df, big, **roles, missing="indicator", num_simulations=2, n_subsets=1,
                    seed=1).set_index(["source", "check"])
    ours, theirs = out.loc[("causalrec", "estimate")], out.loc[("dowhy", "estimate")]
    assert np.isfinite(theirs["estimate"]) and theirs["se"] > 0
    assert abs(ours["estimate"] - theirs["estimate"]) < 2 * np.hypot(ours["se"], theirs["se"])
    assert str(out.attrs["dowhy_estimand"]).count("tenure_missing") >= 1
