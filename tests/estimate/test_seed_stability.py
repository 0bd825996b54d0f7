"""How much the seed (the cross-fitting splits) moves item estimates, on a stated log: 20
items, 60,000 rows of ``simulate_log(popularity_skew=0.5, seed=5)`` (1,750-7,900 rows an
item), clicks, default estimator (pooled GLM, 2 folds, n_repeats="auto"). Seeds 0, 1 and 2:
their splits share none (a split's folds are seeded by a hash of (seed, repeat))."""
import numpy as np
import pytest

import causalrec as cr
from causalrec.estimate.plan import AUTO_MAX_REPEATS, SEED_GAP_TARGET

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def fits():
    sim = cr.datasets.simulate_log(n_items=20, n_rows=60_000, text_confounding=0.0,
                                   popularity_skew=0.5, seed=5)
    log = cr.InteractionLog(sim.data, **{k: v for k, v in {**sim.roles, "text": None}.items()
                                         if v is not None})
    fit = lambda **kw: [cr.ItemEffectEstimator(**kw, seed=s).fit(log) for s in SEEDS]
    return fit(), fit(n_repeats=1)


def _tables(estimators):
    return [e.effects_.set_index("item") for e in estimators]


def _moves(tables):
    """Per item (ok in every fit): each pair of seeds' estimate gap over the item's mean SE."""
    ok = np.logical_and.reduce([t["status"].eq("ok").to_numpy() for t in tables])
    ate = np.stack([t["ate"].to_numpy()[ok] for t in tables])
    se = np.stack([t["se"].to_numpy()[ok] for t in tables]).mean(0)
    gaps = np.stack([ate[i] - ate[j] for i in range(3) for j in range(i + 1, 3)])
    return gaps / se, ok


def test_estimates_move_a_fraction_of_an_se_and_the_top_ten_stays(fits):
    """Issue 28's targets: across seeds every estimate moves <= 0.25 SE and the top 10 keep
    >= 8 items. The rule aims at a seed-to-seed gap sd of SEED_GAP_TARGET (0.07) SE: the
    largest |gap| of 60 (20 items x 3 pairs, the pairs correlated) then lies near 3.3 sd,
    0.23 SE (measured 0.20; one split per seed: 1.4)."""
    estimators, _ = fits
    gaps, ok = _moves(_tables(estimators))
    assert ok.sum() == 20
    assert np.abs(gaps).max() <= 0.25
    top = [set(t["ate"].nlargest(10).index) for t in _tables(estimators)]
    assert all(len(top[0] & other) >= 8 for other in top[1:])  # measured 10 and 10


def test_auto_repeats_follow_the_split_noise_and_report_it(fits):
    """The split count grows from the first 4 by the split-noise share the first splits
    show (here ~0.05 SE^2 a split: 2 x 0.05 / 0.07^2 = 20 splits wanted, the cap's 16
    used), and it is reported (effects attrs, ``n_repeats_``, the summary); one split per
    seed stays one."""
    estimators, single = fits
    for est in estimators:
        assert 4 < est.n_repeats_ <= AUTO_MAX_REPEATS
        assert est.effects_.attrs["n_repeats"] == est.n_repeats_ == len(est.split_folds_)
        assert "Cross-fitting splits:" in str(est.summary())
    assert all(e.n_repeats_ == 1 for e in single)
    share = np.mean([np.minimum(e.effects_["split_sd"] ** 2 / e.effects_["se"] ** 2, 1).mean()
                     for e in estimators])
    # growing was warranted: the final tables' share (16 splits: a better estimate than the
    # first 4 splits' the rule read) wants more than the first 4 splits
    assert 2 * share / SEED_GAP_TARGET ** 2 > 4


def test_split_sd_predicts_how_far_the_seed_moves_an_estimate(fits):
    """The seed-to-seed gap of an S-split average has variance 2 split_sd^2 / S (seeds with
    disjoint splits), so the reported ``split_sd`` tells an analyst how much the seed
    matters. Ratio of the mean squared gap to that prediction: 60 gaps of 20 items (two
    independent per item), split variances with >= 12 degrees of freedom per fit:
    sampling sd of the ratio about 0.25; band 1 +/- 3 sd on the log scale. And averaging
    splits is what removes the noise: the median gap with the auto splits is well under
    half that of one split (1/sqrt 16 = 0.25; band: under 0.5)."""
    estimators, single = fits
    tables = _tables(estimators)
    gaps, ok = _moves(tables)
    predicted = np.stack([2 * t["split_sd"].to_numpy()[ok] ** 2 / e.n_repeats_
                          / t["se"].to_numpy()[ok] ** 2
                          for t, e in zip(tables, estimators)]).mean(0)
    ratio = np.mean(gaps ** 2) / np.mean(predicted)
    assert 0.45 < ratio < 2.2, ratio
    one_split, _ = _moves(_tables(single))
    assert np.median(np.abs(gaps)) < 0.5 * np.median(np.abs(one_split))
