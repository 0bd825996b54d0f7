"""The effects-table door (``check_effects_table``) behind rank_items, compare_policies,
sensitivity and EffectReport, and a prior fit that single extreme rows cannot move."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from causalrec.rank import EmpiricalBayesPrior, compare_policies, rank_items
from causalrec.refute import sensitivity
from causalrec.reporting import EffectReport
from causalrec.schema import SchemaError

N = 60


def effects(seed=0, n=N):
    """n items, true effects N(0, 1), estimates with se 0.5: the prior's var is near 1."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(n)
    se = np.full(n, 0.5)
    return pd.DataFrame({"item": [f"i{j}" for j in range(n)],
                         "ate": theta + se * rng.standard_normal(n), "se": se,
                         "n": 400, "n_treated": rng.integers(10, 100, n),
                         "naive_ate": theta + rng.standard_normal(n), "status": "ok"})


def _set(frame, column, row, value):
    out = frame.copy()
    out[column] = out[column].astype(object)
    out.loc[row, column] = value
    return out


# ----------------------------------------------------------------- the door's errors
BAD_TABLES = [
    ("text ate", lambda e: e.assign(ate=e.ate.astype(str)), "column 'ate'.*non-numeric"),
    ("one text se", lambda e: _set(e, "se", 3, "0.5"), "column 'se'.*'0.5'"),
    ("boolean se", lambda e: e.assign(se=e.se > 0), "column 'se'.*True / False"),
    ("duplicated item", lambda e: pd.concat([e, e.iloc[[4, 7]]]), r"2 item\(s\) have several "
     r"rows: \['i4', 'i7'\]"),
    ("duplicated column", lambda e: pd.concat([e, e[["se"]]], axis=1), "several columns named"),
    ("MultiIndex columns", lambda e: e.set_axis(pd.MultiIndex.from_product([["x"], e.columns]),
                                                axis=1), "MultiIndex"),
    ("empty", lambda e: e.iloc[:0], "empty"),
    ("no se", lambda e: e.drop(columns="se"), r"lacks required column\(s\) \['se'\]"),
    ("mixed item types", lambda e: _set(e, "item", 0, 1), "item labels mix types"),
    ("1 and '1'", lambda e: _set(_set(e, "item", 0, 1), "item", 1, "1"), "mix types"),
    ("missing item", lambda e: _set(e, "item", 2, None), "no item label"),
    ("negative se", lambda e: _set(e, "se", 5, -0.5), r"non-negative.*\['i5'\]"),
]


@pytest.mark.parametrize("name, spoil, match", BAD_TABLES, ids=[b[0] for b in BAD_TABLES])
def test_every_entry_point_refuses_a_bad_table_by_name(name, spoil, match):
    bad = spoil(effects())
    calls = [lambda: rank_items(bad, n_draws=10), lambda: compare_policies(bad, k=3),
             lambda: sensitivity(bad, outcome="continuous"),
             lambda: EffectReport(bad).table()]
    for call in calls:
        with pytest.raises(SchemaError, match=match):
            call()


def test_not_a_frame_is_a_type_error():
    with pytest.raises(TypeError, match="rank_items expects an effects DataFrame"):
        rank_items(effects().to_dict())


def test_numbers_in_other_dtypes_are_read_as_numbers():
    base = effects()
    expected = rank_items(base, n_draws=20).set_index("item").posterior_mean
    variants = [base.assign(ate=base.ate.astype("Float64")),  # nullable
                base.assign(se=base.se.astype(object)),  # object column of floats
                base.assign(se=1, ate=base.ate)]  # integers
    for variant in variants[:2]:
        got = rank_items(variant, n_draws=20).set_index("item").posterior_mean
        pd.testing.assert_series_equal(got, expected.loc[got.index])
    assert rank_items(variants[2], n_draws=20)["rank_status"].eq("ok").all()


def test_unusable_rows_are_kept_with_their_reason():
    base = effects()
    spoilt = base.astype({"ate": "Float64"})
    spoilt.loc[0, "ate"] = pd.NA
    spoilt.loc[1, "ate"] = np.inf
    spoilt.loc[2, "se"] = np.nan
    spoilt.loc[3, "se"] = 0.0
    spoilt.loc[4, "status"] = "too_few_treated"
    spoilt.loc[5, "ate"] = 1e308
    spoilt.loc[6, "se"] = 1e300
    out = rank_items(spoilt, n_draws=20).set_index("item")
    reasons = out.loc[[f"i{j}" for j in range(7)], "rank_status"].tolist()
    assert reasons == ["ate_not_finite", "ate_not_finite", "se_not_finite", "se_zero",
                       "status_not_ok", "ate_extreme", "se_extreme"]
    assert out.loc[[f"i{j}" for j in range(7)], ["posterior_mean", "rank"]].isna().all().all()
    assert out["rank"].notna().sum() == N - 7 and out.attrs["prior"]["n"] == N - 7


# ----------------------------------------------------------------- one extreme row
EXTREME_ROWS = [("se", 1e-12), ("se", 1e-300), ("se", 1e300), ("ate", 1e308),
                ("ate", -1e308), ("ate", 1e12)]


@pytest.mark.parametrize("prior", ["normal", "npmle"])
@pytest.mark.parametrize("column, value", EXTREME_ROWS)
def test_one_extreme_row_does_not_move_the_other_items(prior, column, value):
    base = effects(seed=1)
    spoilt = base.copy()
    spoilt.loc[0, column] = value
    with np.errstate(over="raise", invalid="raise"):  # no overflow or NaN on the way
        out = rank_items(spoilt, prior=prior, n_draws=50).set_index("item")
    clean = rank_items(base.drop(index=0), prior=prior, n_draws=50).set_index("item")
    others = clean.index
    mean = out.loc[others, "posterior_mean"]
    assert np.isfinite(mean).all() and mean.nunique() == len(others)
    if column == "se" and value < 1:
        # an exact estimate: its posterior is the estimate (the NPMLE's: the grid point
        # nearest to it), and the fit is the limit of a precise item's (se 10 times below
        # the others'), not a collapse onto it
        grid = out.attrs["prior"].get("grid", [0.0, 0.0])
        step = 1e-9 if prior == "normal" else (grid[-1] - grid[0]) / (len(grid) - 1)
        assert out.loc["i0", "posterior_mean"] == pytest.approx(spoilt.loc[0, "ate"], abs=step)
        precise = rank_items(base.assign(se=base.se.where(base.index != 0, 0.05)), prior=prior,
                             n_draws=50).set_index("item")
        shift = (mean - precise.posterior_mean[others]).abs() / precise.posterior_sd[others]
        assert shift.max() < 0.1
    else:  # cannot inform the prior: left out, flagged, the others exactly as without it
        assert out.loc["i0", "rank_status"] in {"se_extreme", "ate_extreme"}
        assert np.isnan(out.loc["i0", "posterior_mean"])
        np.testing.assert_allclose(mean, clean.posterior_mean, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_an_exact_item_does_not_collapse_the_normal_prior(seed):
    """On few items, the unfloored marginal likelihood peaks at prior variance 0 on the exact
    item's estimate (measured: var 0, one posterior mean for all 8 items, on each seed); in
    the fit no row counts as more precise than the second most precise one."""
    base = effects(seed=seed, n=8)
    clean_var = EmpiricalBayesPrior("normal").fit(base.ate, base.se).var_
    for se in (1e-12, 1e-100):
        ses = base.se.where(base.index != 0, se)
        prior = EmpiricalBayesPrior("normal").fit(base.ate, ses)
        assert prior.var_ == pytest.approx(clean_var, rel=1e-6) and prior.n_excluded_ == 0
        assert prior.posterior(base.ate, ses).posterior_mean.nunique() == 8


def test_prior_fit_is_equivariant_across_units():
    """Standardising makes the fit independent of the units: 1e150 times every value gives
    1e150 times the posterior means (the unscaled fit squared them into overflow)."""
    base = effects(seed=3)
    small = rank_items(base, n_draws=20).set_index("item")
    big = rank_items(base.assign(ate=base.ate * 1e150, se=base.se * 1e150),
                     n_draws=20).set_index("item")
    np.testing.assert_allclose(big.posterior_mean / 1e150, small.posterior_mean, rtol=1e-6)
    np.testing.assert_array_equal(big["rank"], small["rank"])


# ----------------------------------------------------------------- compare_policies
def test_policy_counts_must_be_usable_and_coverage_is_reported():
    base = effects(seed=4)
    with pytest.raises(SchemaError, match="column 'n_treated'.*'i3'"):
        compare_policies(base.astype({"n_treated": float}).assign(
            n_treated=lambda e: e.n_treated.where(e.index != 3)), k=3)
    # a logging policy spread over items that cannot be valued: its value covers less
    spread = base.assign(status=np.where(base.index < 15, "too_few_treated", "ok"))
    table = compare_policies(spread, k=3).set_index("policy")
    share = base.n_treated[15:].sum() / base.n_treated.sum()
    assert table.loc["logging", "share_valued"] == pytest.approx(share)
    assert table.loc["causal_top_k", "share_valued"] == 1.0


# ----------------------------------------------------------------- property test
cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from([0.0, 1e-300, 1e-12, 1e300, -1e308, 1e308]))


@st.composite
def tables(draw):
    n = draw(st.integers(1, 25))
    ate = draw(st.lists(cells, min_size=n, max_size=n))
    se = draw(st.lists(st.one_of(cells.map(abs), st.floats(0.01, 2.0)), min_size=n,
                       max_size=n))
    items = draw(st.lists(st.sampled_from([f"i{j}" for j in range(40)]), min_size=n,
                          max_size=n))
    frame = pd.DataFrame({"item": items, "ate": ate, "se": se})
    dtype = draw(st.sampled_from(["float64", "Float64", "object", "str"]))
    column = draw(st.sampled_from(["ate", "se"]))
    return frame.astype({column: dtype})


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_random_tables_give_an_error_or_a_sane_ranking(frame):
    before = frame.copy()
    try:
        out = rank_items(frame, n_draws=10)
    except SchemaError as exc:  # a documented refusal names a column or items
        assert exc.column in {"item", "ate", "se"} or "empty" in str(exc)
        return
    except ValueError as exc:
        assert "no rows with status 'ok'" in str(exc)
        return
    finally:
        pd.testing.assert_frame_equal(frame, before)  # the caller's table is untouched
    ranked = out[out["rank_status"] == "ok"]
    assert len(out) == len(frame) and ranked["rank"].notna().all()
    mean = ranked["posterior_mean"].to_numpy(float)
    ate = ranked["ate"].to_numpy(float)
    prior_mean = out.attrs["prior"]["mean"]
    assert np.isfinite(mean).all() and np.isfinite(ranked["posterior_sd"].to_numpy(float)).all()
    # the normal posterior mean lies between the estimate and the prior mean
    low, high = np.minimum(ate, prior_mean), np.maximum(ate, prior_mean)
    slack = 1e-9 * (np.abs(ate) + abs(prior_mean) + 1e-300)
    assert ((mean >= low - slack) & (mean <= high + slack)).all()
    assert out.loc[out["rank_status"] != "ok", "rank"].isna().all()
