"""Items recommended to few users (or to nearly all): their propensities sit near 0 (or 1)
by design, not for lack of overlap, and the clip must not treat them as if it did."""
import warnings

import numpy as np
import pandas as pd
import pytest

import causalrec as cr
from causalrec.estimate.scores import CLIP_BASE_SHARE, clip_bounds


def _fit(df, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log = cr.InteractionLog(df, item="item", treatment="t", outcome="y", confounders=["x"])
        return cr.ItemEffectEstimator(**options).fit(log).effects_


def test_clip_bounds_move_only_where_an_arm_is_rare():
    low, high = clip_bounds([0.5, 0.1, 0.9, 0.005, 0.995, 0.0], 0.01)
    np.testing.assert_allclose(low, [0.01, 0.01, 0.01, 0.0005, 0.01, 0.0])
    np.testing.assert_allclose(high, [0.99, 0.99, 0.99, 0.99, 0.9995, 0.99])
    assert CLIP_BASE_SHARE == 0.1  # the bound stays >= 10x an arm's base weight
    low, high = clip_bounds([0.3], 0.0)  # no clip asked for: none
    assert low[0] == 0.0 and high[0] == 1.0


@pytest.mark.parametrize("nuisance", ["pooled", "boosted"])
def test_a_randomised_item_shown_to_few_or_to_nearly_all_users_is_estimated(nuisance):
    """Was: the absolute clip 0.01 bound every propensity of an item shown to 0.5% of users
    (and 40% of those of a 99%-treated one), so both were "no_overlap" with no number.
    Randomised, such an item's AIPW estimate is its difference in means, up to the
    outcome model's adjustment for x's chance imbalance: its sd is about R SE, with R^2 the
    share of the outcome's variance x explains (slope p(1 - p) 0.5 at p = 0.12: R^2 ~ 0.026,
    R ~ 0.16), so 3 sd ~ 0.5 SE (seeds 0-3 give at most 0.35 here; 0.74 before the folds
    ignored labels, on the 99%-treated item's 300 control rows)."""
    rng = np.random.default_rng(3)
    parts = []
    for k, (rows, share) in enumerate([(60_000, 0.005), (60_000, 0.01), (30_000, 0.99),
                                       (20_000, 0.5)]):
        x = rng.standard_normal(rows)
        t = (rng.random(rows) < share).astype(int)
        y = (rng.random(rows) < 1 / (1 + np.exp(-(-2 + 0.5 * x + 0.3 * t)))).astype(int)
        parts.append(pd.DataFrame({"item": f"i{k}", "x": x, "t": t, "y": y}))
    eff = _fit(pd.concat(parts, ignore_index=True), nuisance=nuisance)
    assert (eff.status == "ok").all(), eff[["item", "status", "share_clipped"]]
    assert (eff.share_clipped < 0.01).all()
    np.testing.assert_array_less(np.abs(eff.ate - eff.naive_ate) / eff.se, 0.5)


def test_confounded_items_with_a_rare_arm_are_estimated_with_honest_intervals():
    """60 items of 4,000 rows, each shown to ~1% of rows, the propensity rising with x
    (half the rows below 0.01): was 0 or 1 of 60 items "ok" (half the rows clipped).
    Coverage of the true effect 0.5: 0.95 within 3 binomial SDs (0.084 over 60 items); the
    mean z within 3 / sqrt(60)."""
    rng = np.random.default_rng(0)
    item = np.repeat(np.arange(60), 4000)
    x = rng.standard_normal(len(item))
    e = 1 / (1 + np.exp(-(np.log(0.01 / 0.99) + x)))
    t = (rng.random(len(item)) < e).astype(int)
    df = pd.DataFrame({"item": item, "x": x, "t": t,
                       "y": x + 0.5 * t + rng.standard_normal(len(item))})
    eff = _fit(df)
    ok = eff.status == "ok"
    assert ok.sum() >= 57, eff.status.value_counts()
    covered = ((eff.ci_low <= 0.5) & (0.5 <= eff.ci_high))[ok].mean()
    assert covered >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / ok.sum())
    z = ((eff.ate - 0.5) / eff.se)[ok]
    assert abs(z.mean()) <= 3 / np.sqrt(ok.sum())
