"""Per-item propensity balancing (causalrec.nuisance.balance): exact balance without a
penalty, no change where nothing is to be balanced, and the AIPW remainder it removes."""
import numpy as np

from causalrec.nuisance.balance import balance_propensity


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
