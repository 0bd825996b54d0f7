"""Recurring units: with ``unit=``, an item's rows of one unit count as one draw in its
variance (the cross-fitting folds already keep them together)."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import causalrec as cr
from causalrec.estimate.scores import effects_table, unit_pairs
from causalrec.exceptions import DataWarning


def sticky_log(seed, n_items=30, n_users=2000, heavy=20, heavy_rows=1500):
    """Light users (~25 rows) and ``heavy`` users of ``heavy_rows`` rows each, shown items
    at random; the policy's choice is fixed per (user, item) (recommended every time or
    never, with a propensity rising in the observed x) and each pair has its own affinity
    (sd 0.5, independent of the choice: no confounding). Effects -0.5 .. 0.5."""
    rng = np.random.default_rng(seed)
    rows = np.r_[rng.poisson(25, n_users - heavy) + 1, np.full(heavy, heavy_rows)]
    user = np.repeat(np.arange(len(rows)), rows)
    item = rng.integers(0, n_items, len(user))
    pair = user * n_items + item
    ux = rng.standard_normal(len(rows))
    e = np.repeat(1 / (1 + np.exp(0.5 - 0.8 * ux)), n_items)
    t = (rng.random(len(e)) < e).astype(int)[pair]
    affinity = 0.5 * rng.standard_normal(len(e))[pair]
    tau = np.linspace(-0.5, 0.5, n_items)
    y = 0.7 * ux[user] + affinity + tau[item] * t + rng.standard_normal(len(user))
    return pd.DataFrame({"user_id": user, "item": item, "x": ux[user], "t": t, "y": y}), tau


def test_a_unit_shown_an_item_many_times_counts_once_in_the_variance():
    """Was: rows as independent draws: coverage 0.60-0.70 over 40 items (sd of z 1.8) on
    143k-row logs, 0.67 here. Now within 3 binomial SDs of 0.95 over the 60 items of two
    logs, and the z spread near 1."""
    covered, z = [], []
    for seed in (0, 1):
        df, tau = sticky_log(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                                    confounders=["x"], unit="user_id")
            eff = cr.ItemEffectEstimator().fit(log).effects_
        assert (eff["status"] == "ok").all()
        covered.append((eff["ci_low"] <= tau) & (tau <= eff["ci_high"]))
        z.append((eff["ate"] - tau) / eff["se"])
    covered, z = np.concatenate(covered), np.concatenate(z)
    assert covered.mean() >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / len(covered)), covered.mean()
    assert np.std(z) < 1.3, np.std(z)  # old: 1.7


def test_units_of_one_row_per_item_leave_the_variance_as_it_was():
    """Distinct units within every item: the unit variance is the row variance (ratio 1)."""
    rng = np.random.default_rng(0)
    n = 4000
    seg = torch.as_tensor(rng.integers(0, 5, n))
    t = torch.as_tensor((rng.random(n) < 0.4).astype(np.float64))
    e = torch.as_tensor(rng.uniform(0.2, 0.6, n))
    mu0, mu1 = (torch.as_tensor(rng.normal(size=n)) for _ in range(2))
    y = torch.as_tensor(rng.normal(size=n))
    folds = torch.as_tensor(rng.integers(0, 2, n))
    args = (seg, t, y, e, mu0, mu1, 5, "aipw", 0.01, None, 0.05, False)
    plain = effects_table(*args, folds=folds)[0]
    units = effects_table(*args, folds=folds, units=unit_pairs(seg, torch.arange(n)))[0]
    np.testing.assert_allclose(units["se"], plain["se"], rtol=1e-12)
    np.testing.assert_allclose(units["dof"], plain["dof"], rtol=1e-12)
    # each user's rows spread over the items (one row per unit and item): still ratio 1
    users = torch.as_tensor(pd.Series(seg.numpy()).groupby(seg.numpy()).cumcount().to_numpy())
    spread = effects_table(*args, folds=folds, units=unit_pairs(seg, users))[0]
    np.testing.assert_allclose(spread["se"], plain["se"], rtol=1e-12)


def test_an_item_level_unit_column_warns():
    """``unit=`` naming an item-level id (a campaign, the item's own code) by mistake: a
    DataWarning naming it; the estimates keep their row-level variance (one unit per item
    has no spread between units to read)."""
    rng = np.random.default_rng(0)
    item = np.repeat(np.arange(20), 300)
    x = rng.standard_normal(len(item))
    t = (rng.random(len(item)) < 1 / (1 + np.exp(-x))).astype(int)
    df = pd.DataFrame({"item": item, "x": x, "t": t, "campaign": item // 2,
                       "y": x + 0.3 * t + rng.standard_normal(len(item))})
    log = cr.InteractionLog(df, item="item", treatment="t", outcome="y", confounders=["x"],
                            unit="campaign")
    with pytest.warns(DataWarning, match="'campaign' takes one value within every item"):
        eff = cr.ItemEffectEstimator().fit(log).effects_
    assert (eff["status"] == "ok").all() and (eff["dof"] > 100).all()
