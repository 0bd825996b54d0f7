"""Numerics of scale (issues 26 and 28): float32 gives the float64 answer for offset and
scaled outcomes and confounders; constant outcomes are judged per item and relative to the
values' magnitude; a subnormal-scaled confounder is rescaled, not dropped; the float32 check
at the door; every nuisance option on 1, 2, 3 and 5 items."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from causalrec.datasets import simulate_log
from causalrec.estimate import ItemEffectEstimator, estimate_item_effects
from causalrec.estimate.design import DesignSpec, _mean_std, choose_moments
from causalrec.estimate.scaling import OutcomeScale, float32_merged_share
from causalrec.estimate.scores import _outcome_spread
from causalrec.exceptions import DataWarning
from causalrec.glm.layout import segment_sum
from causalrec.nuisance import FactorisedLearner
from causalrec.schema import InteractionLog

# float32 against float64: the contract is 0.05 SE; float32 rounding of standardised values
# (2^-24 relative) moves an estimate by ~1e-5 SE, so any real loss of precision (y + 1e8
# cast first: ulp 8 against an outcome sd of ~3) shows up far above it
WITHIN_SE = 0.05


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def continuous():
    sim = simulate_log(n_items=20, n_rows=10_000, outcome="continuous", seed=3)
    return sim.data, {**sim.roles, "text": None}


@pytest.fixture(scope="module")
def binary():
    sim = simulate_log(n_items=10, n_rows=6_000, seed=2)
    return sim, {**sim.roles, "text": None}


def _dtype_gap(data, roles, **options):
    """max over items ok in both of |float32 - float64| / SE, for the estimate and its SE."""
    r = {dt: _quiet(estimate_item_effects, data, **roles, dtype=dt, **options).set_index("item")
         for dt in ("float32", "float64")}
    ok = (r["float32"].status == "ok") & (r["float64"].status == "ok")
    assert ok.sum() >= 0.9 * len(ok)
    se = r["float64"].se[ok]
    return ((r["float32"].ate - r["float64"].ate)[ok].abs() / se).max(), \
        ((r["float32"].se - r["float64"].se)[ok].abs() / se).max()


OUTCOME_CASES = {"offset 1e8": lambda y: y + 1e8, "times 1e6": lambda y: y * 1e6,
                 "times 1e-6": lambda y: y * 1e-6, "offset -3e9": lambda y: y - 3e9}


@pytest.mark.parametrize("case", list(OUTCOME_CASES))
def test_float32_equals_float64_for_offset_and_scaled_outcomes(continuous, case):
    data, roles = continuous
    y = roles["outcome"]
    gap_ate, gap_se = _dtype_gap(data.assign(**{y: OUTCOME_CASES[case](data[y])}), roles)
    assert gap_ate < WITHIN_SE and gap_se < WITHIN_SE


CONFOUNDER_CASES = {"offset 1e8": lambda x: x + 1e8, "times 1e6": lambda x: x * 1e6,
                    "times 1e-6": lambda x: x * 1e-6, "offset 1e12": lambda x: x + 1e12}


@pytest.mark.parametrize("case", list(CONFOUNDER_CASES))
def test_float32_equals_float64_for_offset_and_scaled_confounders(continuous, binary, case):
    change = CONFOUNDER_CASES[case]
    for data, roles in (continuous, (binary[0].data, binary[1])):
        moved = data.assign(user_activity=change(data.user_activity), tenure=change(data.tenure))
        gap_ate, gap_se = _dtype_gap(moved, roles)
        assert gap_ate < WITHIN_SE and gap_se < WITHIN_SE


@pytest.mark.parametrize("nuisance", ["per_item", "boosted", "factorised", "auto",
                                      (LogisticRegression(max_iter=300), Ridge())],
                         ids=["per_item", "boosted", "factorised", "auto", "sklearn"])
def test_float32_equals_float64_for_an_offset_outcome_with_every_nuisance(continuous, nuisance):
    data, roles = continuous
    y = roles["outcome"]
    gap_ate, gap_se = _dtype_gap(data.assign(**{y: data[y] + 1e8}), roles, nuisance=nuisance)
    assert gap_ate < WITHIN_SE and gap_se < WITHIN_SE


def test_effects_come_back_in_the_outcomes_units(continuous):
    """With the same folds, y + c leaves every estimate and SE as it is and a y gives a times
    them (float32 default): the fits see the same standardised outcome."""
    data, roles = continuous
    y = roles["outcome"]
    base = _quiet(ItemEffectEstimator(n_repeats=1).fit, InteractionLog(data, **roles))
    folds = base.fold_.to_numpy()
    ref = base.effects_.set_index("item")
    shifted = _quiet(estimate_item_effects, data.assign(**{y: data[y] + 1e8}), **roles,
                     folds=folds).set_index("item")
    scaled = _quiet(estimate_item_effects, data.assign(**{y: data[y] * 1e6}), **roles,
                    folds=folds).set_index("item")
    ok = ref.status == "ok"
    # the offset rounds y itself at 1e8 (float64 ulp 1.5e-8), and a standardised value
    # near a float32 rounding boundary then rounds the other way: differences of up to
    # ~4e-6 SE (measured), against the 0.05 SE asked of float32
    np.testing.assert_allclose(shifted.ate[ok], ref.ate[ok], atol=1e-5 * ref.se[ok].min())
    np.testing.assert_allclose(shifted.se[ok], ref.se[ok], rtol=1e-6)
    np.testing.assert_allclose(scaled.ate[ok], 1e6 * ref.ate[ok], rtol=1e-6,
                               atol=1e-6 * 1e6 * ref.se[ok].min())
    np.testing.assert_allclose(scaled.se[ok], 1e6 * ref.se[ok], rtol=1e-6)
    assert (shifted.status == ref.status).all() and (scaled.status == ref.status).all()


def test_outcome_scale_is_two_pass_and_overflow_free():
    rng = np.random.default_rng(0)
    y = rng.normal(size=10_000)
    for offset, factor in ((0.0, 1.0), (1e9, 1.0), (-1e12, 3.0), (0.0, 1e300), (0.0, 1e-300)):
        scale = OutcomeScale.of(y * factor + offset)
        assert scale.scale == pytest.approx(factor * y.std(), rel=1e-6)
        assert scale.center == pytest.approx(offset + factor * y.mean(), rel=1e-12,
                                             abs=1e-9 * factor)
        z = scale.standardise(y * factor + offset)
        # up to the rounding of y * factor + offset itself (float64 spacing at the offset)
        atol = 1e-9 + 2 * np.spacing(abs(offset)) / (factor * y.std())
        np.testing.assert_allclose(z, (y - y.mean()) / y.std(), atol=atol)
    assert OutcomeScale.of(np.full(5, 7.0)).scale == 1.0  # constant: scale 1, no division by 0


# -- constant outcomes: per item, relative to the values' magnitude ------------------------
def _with_item_outcome(data, roles, values):
    """``data`` with the first item's outcome replaced by ``values`` (broadcast to its rows)."""
    y = roles["outcome"]
    out = data.astype({y: float})
    first = out[roles["item"]] == out[roles["item"]].iloc[0]
    out.loc[first, y] = np.broadcast_to(values, first.sum()) if np.ndim(values) else values
    return out, out[roles["item"]].iloc[0]


@pytest.mark.parametrize("make", [
    lambda n: 0.3, lambda n: 1e9 + 0.3, lambda n: -2.5e-7,
    # one value written two ways (0.1 + 0.2 != 0.3 in float64: 1 ulp apart)
    lambda n: np.where(np.arange(n) % 2, 0.1 + 0.2, 0.3)],
    ids=["0.3", "1e9+0.3", "tiny", "one value written twice"])
def test_an_item_with_a_constant_outcome_gets_the_status(continuous, make):
    data, roles = continuous
    n = int((data[roles["item"]] == data[roles["item"]].iloc[0]).sum())
    df, item = _with_item_outcome(data, roles, make(n))
    out = _quiet(estimate_item_effects, df, **roles).set_index("item")
    assert out.loc[item, "status"] == "constant_outcome"
    assert out.loc[item, "ate"] == 0.0 and out.loc[item, "naive_ate"] == 0.0
    assert np.isnan(out.loc[item, "se"]) and out.loc[item, "outcome_sd"] == 0.0
    others = out.drop(index=item)
    assert (others.status == "ok").mean() > 0.9


def test_an_outcome_constant_in_one_arm_only_is_estimated(continuous):
    data, roles = continuous
    y, t = roles["outcome"], roles["treatment"]
    df = data.astype({y: float})
    first = df[roles["item"]] == df[roles["item"]].iloc[0]
    df.loc[first & (df[t] == 1), y] = 4.0
    out = _quiet(estimate_item_effects, df, **roles).set_index("item")
    row = out.loc[df[roles["item"]].iloc[0]]
    assert row.status == "ok" and np.isfinite(row.se) and row.se > 0 and row.outcome_sd > 0


@pytest.mark.parametrize("offset", [1e9, 1e12, -1e15])
@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_an_offset_outcome_is_not_constant(continuous, binary, kind, offset):
    data, roles = continuous if kind == "continuous" else (binary[0].data, binary[1])
    y = roles["outcome"]
    ref = _quiet(estimate_item_effects, data, **roles)
    out = _quiet(estimate_item_effects, data.assign(**{y: data[y] + offset}), **roles)
    assert not (out.status == "constant_outcome").any()
    # the spread itself is right, up to the rounding of y + offset: float64 spacing at 1e15
    # is 0.125, a rounding variance of 0.125^2 / 12 = 1.3e-3 beside outcome variances of
    # 0.1 or more (at most +0.7% on the sd); at 1e12 it is 1.2e-4 (1e-8 of the variance)
    np.testing.assert_allclose(out.outcome_sd, ref.outcome_sd,
                               rtol=0.02 if abs(offset) >= 1e15 else 1e-6)


def test_outcome_spread_against_numpy_two_pass():
    rng = np.random.default_rng(4)
    seg = np.repeat(np.arange(4), [50, 80, 1, 30])
    y = np.r_[rng.normal(size=50) + 1e9, rng.random(80) * 1e-300, [5.0], np.full(30, 0.7)]
    n = np.bincount(seg).astype(np.float64)
    S = lambda v: segment_sum(v, torch.as_tensor(seg), 4)
    sd, constant = _outcome_spread(torch.as_tensor(y), torch.as_tensor(seg), 4,
                                   torch.as_tensor(n), S)
    # numpy's std in units where the values are of order 1 (its squares of 1e-300 underflow)
    expected = [np.std(y[seg == 0] - 1e9), 1e-300 * np.std(y[seg == 1] / 1e-300)]
    np.testing.assert_allclose(sd.numpy()[:2], expected, rtol=1e-6)
    assert constant.tolist() == [False, False, True, True]


# -- a subnormal-scaled confounder is rescaled, not dropped --------------------------------
@pytest.mark.parametrize("factor", [1e-310, 2.0 ** -1060, 1e-300, 1e300])
def test_tiny_or_huge_confounder_is_rescaled_and_estimates_equal(binary, factor):
    sim, roles = binary
    base = _quiet(ItemEffectEstimator(n_repeats=1).fit, InteractionLog(sim.data, **roles))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # nothing dropped or changed
        warnings.filterwarnings("ignore", message=".*repeat another row")
        out = ItemEffectEstimator(n_repeats=1).fit(
            InteractionLog(sim.data.assign(user_activity=sim.data.user_activity * factor),
                           **roles), folds=base.fold_.to_numpy())
    assert out.design_columns_ == base.design_columns_
    ok = base.effects_.status == "ok"
    # 2^-1060 and 1e-310 keep 40+ bits of each value (subnormal): float32 rounding remains
    np.testing.assert_allclose(out.effects_.ate[ok], base.effects_.ate[ok],
                               atol=1e-4 * base.effects_.se[ok].min())


def test_choose_moments_rescales_a_subnormal_spread_exactly():
    rng = np.random.default_rng(5)
    x = rng.normal(2.0, 3.0, size=1_000)
    tiny = x * 2.0 ** -1030  # subnormal: each value keeps ~44 of its 53 bits
    c, s, problem, k = choose_moments(len(tiny), tiny.min(), tiny.max(),
                                      _mean_std(tiny, np.abs(tiny).max()), None)
    assert problem is None and k > 1000
    np.testing.assert_allclose((np.ldexp(tiny, k) - c) * s, (x - x.mean()) / x.std(), atol=1e-9)
    assert choose_moments(10, 1.0, 2.0, (1.5, 0.5), None)[3] == 0  # normal spread: no rescale


def test_design_rows_apply_the_rescale():
    rng = np.random.default_rng(6)
    n = 500
    df = pd.DataFrame({"item": rng.integers(0, 3, n), "t": rng.integers(0, 2, n),
                       "y": rng.random(n), "a": rng.normal(size=n)})
    log = InteractionLog(df.assign(tiny=df.a * 1e-310), item="item", treatment="t",
                         outcome="y", confounders=["a", "tiny"])
    spec = DesignSpec.from_log(log)
    assert spec.columns == ["a", "tiny"] and spec.exponent[0] == 0 and spec.exponent[1] > 1000
    X = spec.transform(log, dtype=np.float64).X
    np.testing.assert_allclose(X[:, 1], X[:, 0], atol=1e-9)


# -- the float32 check at the door ---------------------------------------------------------
def _bimodal(rng, n):
    """Two clusters 1e9 apart whose within-cluster differences (order 1) matter: after
    standardising (sd ~5e8) they are ~2e-9, below float32's resolution at 1."""
    return np.where(rng.random(n) < 0.5, 0.0, 1e9) + rng.normal(size=n)


def test_float32_check_names_columns_it_cannot_hold(binary):
    sim, roles = binary
    rng = np.random.default_rng(7)
    df = sim.data.assign(clusters=_bimodal(rng, len(sim.data)),
                         shifted=sim.data.user_activity + 1e8)
    roles = {**roles, "confounders": roles["confounders"] + ["clusters", "shifted"]}
    log = InteractionLog(df, **roles)
    with pytest.warns(DataWarning, match="'clusters'") as record:
        DesignSpec.from_log(log, dtype=np.float32)
    assert not any("shifted" in str(w.message) for w in record)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        DesignSpec.from_log(log, dtype=np.float64)  # float64 holds them: no warning


def test_float32_check_names_the_outcome(continuous):
    data, roles = continuous
    y = roles["outcome"]
    df = data.assign(**{y: data[y] + _bimodal(np.random.default_rng(8), len(data))})
    with pytest.warns(DataWarning, match=f"'{y}'"):
        ItemEffectEstimator(n_repeats=1, dtype="float32").fit(InteractionLog(df, **roles))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ItemEffectEstimator(n_repeats=1, dtype="float64").fit(InteractionLog(df, **roles))
    assert not any("float32 cannot hold" in str(w.message) for w in record)


def test_float32_merged_share_of_ordinary_columns_is_small():
    rng = np.random.default_rng(9)
    normal = rng.normal(size=50_000)
    # birthday bound: 20,000 draws at float32's spacing merge ~1e-4 of them
    assert float32_merged_share(normal, normal.mean(), 1 / normal.std()) < 1e-3
    shifted = normal + 1e8  # centred in float64 first: nothing lost
    assert float32_merged_share(shifted, shifted.mean(), 1 / shifted.std()) < 1e-3
    ints = rng.integers(0, 24, 50_000).astype(float)  # few distinct values, all kept
    assert float32_merged_share(ints, ints.mean(), 1 / ints.std()) == 0.0
    clusters = _bimodal(rng, 50_000)
    assert float32_merged_share(clusters, clusters.mean(), 1 / clusters.std()) > 0.5
    with_outlier = np.r_[normal[:1000], 1e300]  # standardised beyond float32's range
    assert float32_merged_share(with_outlier, 0.0, 1.0) == 1.0


# -- every nuisance option on any number of items >= 1 -------------------------------------
NUISANCES = {"pooled": "pooled", "per_item": "per_item", "boosted": "boosted",
             "factorised": "factorised", "auto": "auto",
             "sklearn": (LogisticRegression(max_iter=300), Ridge())}


@pytest.fixture(scope="module", params=[1, 2, 3, 5])
def few_items(request):
    n_items = request.param
    sim = simulate_log(n_items=n_items, n_rows=700 * n_items, seed=1)
    return sim, {**sim.roles, "text": None}


@pytest.mark.parametrize("name", list(NUISANCES))
def test_every_nuisance_works_on_few_items(few_items, name):
    sim, roles = few_items
    nuisance = NUISANCES[name]
    if name == "sklearn":  # a 0/1 outcome: a classifier for the outcome as well
        nuisance = (LogisticRegression(max_iter=300), LogisticRegression(max_iter=300))
    out = _quiet(estimate_item_effects, sim.data, **roles, nuisance=nuisance).set_index("item")
    truth = sim.truth.set_index("item").true_ate
    assert len(out) == len(truth) and (out.status == "ok").all()
    # each estimate within 4 SE of the truth (a fixed seed; 4 SE: 6e-5 two-sided per item)
    z = (out.ate - truth.loc[out.index]).abs() / out.se
    assert (z < 4).all(), z


@pytest.mark.parametrize("n_items", [1, 2, 3, 5])
def test_factorised_rank_is_capped_by_the_items(n_items):
    rng = np.random.default_rng(10)
    n = 300 * n_items
    item = np.repeat(np.arange(n_items), 300)
    X = rng.normal(size=(n, 8))
    y = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0] * (1 + item % 2)))).astype(float)
    Xi = np.column_stack([X, item])
    pred, _ = FactorisedLearner(rank=6).fit_predict(
        Xi, y, np.zeros(n), Xi, np.zeros(n), family="logistic", validation=None, seed=0,
        categorical=True)
    assert pred.shape == (n,) and np.isfinite(pred).all()
    # the fit follows the item's slope: a better log loss than the base rate
    p = np.clip(pred, 1e-12, 1 - 1e-12)
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    base = -np.mean(y * np.log(y.mean()) + (1 - y) * np.log(1 - y.mean()))
    assert loss < base
