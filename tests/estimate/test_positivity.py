"""Positivity within levels of a categorical confounder: an item never recommended to one
device is an extrapolation there, whatever its propensity model says."""
import warnings

import numpy as np
import pandas as pd
import pytest

import causalrec as cr
from causalrec.estimate.positivity import EXPECTED_MIN, ONE_ARM_MAX, one_arm_share, stratum_counts


def segment_log(seed, n_items=20, rows=3000, never_shown=0.15, items_violated=None):
    """Clicks on x and a device; the logging policy never recommends the first
    ``items_violated`` items (all by default) on "ios" (``never_shown`` of the rows), where
    the effect differs (0.05 against 0.15). Returns the log and each item's true effect."""
    rng = np.random.default_rng(seed)
    item = np.repeat(np.arange(n_items), rows)
    x = rng.standard_normal(len(item))
    device = rng.choice(["ios", "android", "web"], len(item),
                        p=[never_shown, (1 - never_shown) / 2, (1 - never_shown) / 2])
    e = 1 / (1 + np.exp(-(-0.5 + 0.8 * x)))
    violated = item < (n_items if items_violated is None else items_violated)
    e = np.where((device == "ios") & violated, 0.0, e)
    t = (rng.random(len(item)) < e).astype(int)
    ios = device == "ios"
    p0 = 1 / (1 + np.exp(-(-1.5 + 0.6 * x + ios)))
    p1 = p0 + np.where(ios, 0.05, 0.15)
    y = (rng.random(len(item)) < np.where(t == 1, p1, p0)).astype(int)
    truth = pd.Series(p1 - p0).groupby(item).mean().to_numpy()
    return pd.DataFrame({"item": item, "x": x, "device": device, "t": t, "y": y}), truth


def _fit(df, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log = cr.InteractionLog(df, item="item", treatment="t", outcome="y", confounders=["x"],
                                categorical=["device"])
        return cr.ItemEffectEstimator(**options).fit(log).effects_


@pytest.mark.parametrize("nuisance", ["pooled", "boosted"])
def test_an_item_never_shown_on_a_device_is_no_overlap(nuisance):
    """15% of each violated item's rows on a device it is never shown on: was "ok" with every
    interval missing the truth (mean z +4.3: the outcome models extrapolate into the level);
    now "no_overlap" with its share reported. The items shown everywhere stay "ok" and cover
    (10 items: at least 8, a 3-SD binomial bound on 0.95)."""
    df, truth = segment_log(0, items_violated=10)
    eff = _fit(df, nuisance=nuisance)
    violated = eff.item.to_numpy() < 10
    assert (eff.status[violated] == "no_overlap").all(), eff.status.value_counts()
    np.testing.assert_allclose(eff.share_one_arm_strata[violated], 0.15, atol=0.02)
    assert np.isnan(eff.ate[violated]).all()
    healthy = eff[~violated]
    assert (healthy.status == "ok").all() and (healthy.share_one_arm_strata == 0).all()
    covered = (healthy.ci_low <= truth[~violated]) & (truth[~violated] <= healthy.ci_high)
    assert covered.sum() >= 8


def test_one_arm_levels_are_counted_only_beyond_chance():
    """A level without treated rows counts when the item's own rate expects >= 10 of them
    there; fewer is chance. Several columns: the largest share, not the sum."""
    seg = np.repeat([0, 1], [1000, 1000])
    t = np.zeros(2000)
    t[:500], t[1000:1010] = 1, 1  # item 0: half treated; item 1: 1% treated
    level = np.where(np.arange(2000) % 1000 < 900, "a", "b")  # "b": rows 900-999 of each
    other = np.where(np.arange(2000) % 1000 >= 950, "c", "d")
    share = one_arm_share([stratum_counts(seg, level, t), stratum_counts(seg, other, t)],
                          [1000, 1000], [500, 10])
    # item 0: "b" expects 50 treated, has 0 -> 10% of rows; "c" (50 rows) -> 5%: max 10%.
    # item 1: "b" expects 1 treated rows (< EXPECTED_MIN): not counted
    np.testing.assert_allclose(share, [0.10, 0.0])
    assert EXPECTED_MIN == 10 and ONE_ARM_MAX == 0.05
    missing = np.array(["a"] * 900 + [None] * 100 + ["a"] * 1000, dtype=object)
    np.testing.assert_allclose(one_arm_share([stratum_counts(seg, missing, t)], [1000, 1000],
                                             [500, 10]), [0.10, 0.0])  # a missing level too


def test_levels_that_both_arms_reach_are_not_flagged():
    """The same log with every item shown on every device: no share, every item "ok"."""
    df, _ = segment_log(1, n_items=6, never_shown=0.15, items_violated=0)
    eff = _fit(df)
    assert (eff.share_one_arm_strata == 0).all() and (eff.status == "ok").all()


def test_the_report_says_why_an_item_has_no_overlap():
    """The overlap section names the rule and lists the share for the flagged items."""
    df, _ = segment_log(3, n_items=4, rows=2000, items_violated=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log = cr.InteractionLog(df, item="item", treatment="t", outcome="y", confounders=["x"],
                                categorical=["device"])
        est = cr.ItemEffectEstimator().fit(log)
        html = cr.EffectReport(est).to_html()
    assert (est.effects_.status.to_numpy()[:2] == "no_overlap").all()
    assert "level of a categorical confounder one arm never reaches" in html
    assert "share_one_arm_strata" in html
