"""Per-item propensity balancing (causalrec.nuisance.balance): exact balance without a
penalty, no change where nothing is to be balanced, the AIPW remainder it removes, and the
estimators' step (every nuisance, only the propensity, only where it applies)."""
import numpy as np
import pandas as pd
import pytest

from causalrec.datasets import simulate_log
from causalrec.estimate import ItemEffectEstimator, estimate_item_effects
from causalrec.nuisance.balance import balance_propensity
from causalrec.schema import InteractionLog


def _weighted_gap(e, t, item, f, n_items):
    """Per item: inverse-propensity weighted treated minus control sum of f centred within
    the item, over the item's rows."""
    S = lambda w: np.bincount(item, w, n_items)
    count = S(np.ones(len(f)))
    centred = f - (S(f) / count)[item]
    return (S(t / e * centred) - S((1 - t) / (1 - e) * centred)) / count


def _tail_log(seed=0, n_items=300, direction_sd=0.7):
    """Small items (40-200 rows) whose exposure and outcome both rise along the item's own
    direction v_k of three user columns (a user-item match); true effect 0 everywhere."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(40, 200, n_items)
    item = np.repeat(np.arange(n_items), sizes)
    F = rng.normal(size=(len(item), 3))
    V = rng.normal(0, direction_sd, (n_items, 3))
    match = (F * V[item]).sum(1)
    logit = rng.normal(-0.5, 0.3, n_items)[item] + match
    t = (rng.random(len(item)) < 1 / (1 + np.exp(-logit))).astype(float)
    y = match + rng.normal(0, 1, len(item))
    return item, F, t, y, n_items


def test_small_penalty_balances_every_column_within_every_item():
    item, F, t, _, n_items = _tail_log()
    e0 = np.full(len(t), t.mean())  # over-smoothed: one propensity for all rows
    e, gamma = balance_propensity(e0, t, item, F, n_items=n_items, penalty=1e-8)
    for j in range(F.shape[1]):
        before = np.abs(_weighted_gap(e0, t, item, F[:, j], n_items)).mean()
        after = np.abs(_weighted_gap(e, t, item, F[:, j], n_items)).max()
        assert before > 0.1 and after < 1e-6
    assert np.isfinite(gamma).all() and (e > 0).all() and (e < 1).all()


def test_nothing_to_balance_changes_nothing():
    item, F, t, _, n_items = _tail_log()
    e0 = np.full(len(t), 0.4)
    # a column constant within every item (item-level, e.g. item text): no slope, e unchanged
    level = np.arange(n_items, dtype=float)[item][:, None]
    e, gamma = balance_propensity(e0, t, item, level, n_items=n_items, penalty=10.0)
    np.testing.assert_array_equal(e, e0)
    assert not gamma.any()
    # a huge ridge: the calibration is ~0
    e, _ = balance_propensity(e0, t, item, F, n_items=n_items, penalty=1e12)
    np.testing.assert_allclose(e, e0, atol=1e-8)


def _hajek(e, t, y, item, n_items):
    S = lambda w: np.bincount(item, w, n_items)
    wt, wc = t / e, (1 - t) / (1 - e)
    return S(wt * y) / S(wt) - S(wc * y) / S(wc)


def test_balancing_removes_the_remainder_of_an_over_smoothed_propensity():
    # the weighting estimator with the over-smoothed propensity keeps the match's bias
    # (outcome model 0: the whole remainder); balanced along the user columns it is gone
    item, F, t, y, n_items = _tail_log(seed=1)
    e0 = np.full(len(t), t.mean())
    e, _ = balance_propensity(e0, t, item, F, n_items=n_items, penalty=10.0)
    smooth, balanced = _hajek(e0, t, y, item, n_items), _hajek(e, t, y, item, n_items)
    se = lambda a: a.std() / np.sqrt(len(a))
    # true effects are 0: the mean estimate is the bias (the naive one is ~0.9, 20 SEs)
    assert smooth.mean() > 10 * se(smooth)
    # at least two thirds removed, with twice the paired SE as margin (measured: 80%; the
    # rest: the arms' weight totals are not balanced, the normalised means keep some)
    assert balanced.mean() + 2 * se(balanced - smooth) < smooth.mean() / 3
    # and not by noise: the spread across items grows less than the bias falls
    assert np.sqrt((balanced ** 2).mean()) < 0.8 * np.sqrt((smooth ** 2).mean())


@pytest.fixture(scope="module")
def text_log():
    # a small log with text (its embeddings are cached by the other text tests)
    sim = simulate_log(n_items=10, n_users=200, n_rows=4_000, popularity_skew=0.3, seed=5)
    return sim, InteractionLog(sim.data, **sim.roles)


@pytest.mark.parametrize("nuisance", ["pooled", "per_item", "factorised"])
def test_estimators_balance_the_text_components_and_only_the_propensity(text_log, nuisance):
    sim, log = text_log
    # per_item balances only when asked ("auto" leaves its own-slope propensity as fitted)
    on = ItemEffectEstimator(nuisance=nuisance, n_repeats=1,
                             balance_penalty=10.0 if nuisance == "per_item" else "auto").fit(log)
    off = ItemEffectEstimator(nuisance=nuisance, n_repeats=1, balance_penalty=None).fit(log)
    ok = on.effects_.status.eq("ok").to_numpy()
    assert ok.sum() >= 8 and (on.balance_shift_[ok] > 0).all()
    assert (off.balance_shift_ == 0).all()
    np.testing.assert_array_equal(on.mu0_, off.mu0_)  # the outcome models are untouched
    np.testing.assert_array_equal(on.mu1_, off.mu1_)
    text = on.text_confounders_.transform(sim.data).to_numpy()
    item, t = pd.factorize(sim.data.item_id)[0], sim.data.recommended.to_numpy()
    rows = np.isin(item, np.flatnonzero(ok))

    def gaps(est):  # per item and text column: the arms' weighted sums of the centred column
        e = est.propensity_.to_numpy()
        return np.abs(np.stack([_weighted_gap(e[rows], t[rows], item[rows], c[rows], 10)
                                for c in text.T], 1))

    # the ridge leaves some imbalance; the step removes most of it
    assert gaps(on).sum() < 0.5 * gaps(off).sum()


def test_no_step_for_a_logged_propensity_outcome_regression_or_auto_per_item(text_log):
    sim, log = text_log
    assert (ItemEffectEstimator(nuisance="per_item").fit(log).balance_shift_ == 0).all()
    logged = InteractionLog(sim.data, **sim.roles, propensity="propensity")
    a = ItemEffectEstimator().fit(logged)
    b = ItemEffectEstimator(balance_penalty=None).fit(logged)
    assert (a.balance_shift_ == 0).all()
    pd.testing.assert_frame_equal(a.effects_, b.effects_)
    regression = ItemEffectEstimator(method="or").fit(log)
    assert (regression.balance_shift_ == 0).all()


def test_balancing_removes_text_confounding_the_pooled_models_leave_in_the_tail():
    # heavy-tailed log (91% of items under 500 rows) confounded by a user x item topic match
    # seen only through the user text; the paired gain over items, in its own SEs
    sim = simulate_log(n_items=400, n_rows=100_000, popularity_skew=0.8, seed=316)
    roles = {**sim.roles, "text": ["user_text"]}
    on = estimate_item_effects(sim.data, **roles).set_index("item")
    off = estimate_item_effects(sim.data, **roles, balance_penalty=None).set_index("item")
    ok = on.status.eq("ok") & off.status.eq("ok")
    d, y = sim.data, sim.roles["outcome"]
    arm = d.groupby(["item_id", "recommended"])[y].mean().unstack()
    true = sim.truth.set_index("item").true_ate
    items = ok[ok].index
    naive = (arm[1] - arm[0] - true).loc[items].mean()
    err_on, err_off = (on.ate - true).loc[items], (off.ate - true).loc[items]
    gain = err_off - err_on
    assert len(items) > 200 and naive > 0
    assert gain.mean() > 3 * gain.std() / np.sqrt(len(items))
    assert 1 - err_on.mean() / naive > 1 - err_off.mean() / naive + 0.04


def test_numeric_confounders_can_be_balanced_and_bad_names_are_refused(text_log):
    sim, log = text_log
    plain = InteractionLog(sim.data, **{**sim.roles, "text": None})
    off = ItemEffectEstimator(n_repeats=1).fit(plain)  # no text: nothing balanced by default
    on = ItemEffectEstimator(n_repeats=1, balance_columns=["user_activity"]).fit(plain)
    ok = on.effects_.status.eq("ok").to_numpy()
    assert (off.balance_shift_ == 0).all() and (on.balance_shift_[ok] > 0).all()
    item, t = pd.factorize(sim.data.item_id)[0], sim.data.recommended.to_numpy()
    rows = np.isin(item, np.flatnonzero(ok))
    activity = sim.data.user_activity.to_numpy(float)[rows]
    gap = lambda est: np.abs(_weighted_gap(est.propensity_.to_numpy()[rows], t[rows],
                                           item[rows], activity, 10)).sum()
    assert gap(on) < 0.5 * gap(off)
    for bad in (["device"], ["no_such_column"]):  # categorical, unknown
        with pytest.raises(ValueError, match="balance_columns"):
            ItemEffectEstimator(balance_columns=bad).fit(log)
