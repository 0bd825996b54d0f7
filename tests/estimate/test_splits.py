"""Repeated cross-fitting: each split's effects table, combined (causalrec.estimate.splits)."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import causalrec as cr
from causalrec.estimate.folds import split_seed
from causalrec.estimate.scores import effects_table
from causalrec.estimate.splits import combine_splits

ITEM = "item_id"


@pytest.fixture(scope="module")
def log():
    sim = cr.datasets.simulate_log(n_items=8, n_rows=3_000, popularity_skew=0.3, seed=9)
    roles = {**sim.roles, "text": None}
    return cr.InteractionLog(sim.data, **{k: v for k, v in roles.items() if v is not None})


def _split_table(fit, log):
    """The effects table of one single-split fit, recomputed from its out-of-fold
    predictions and folds."""
    seg = pd.Series(pd.factorize(log.data[ITEM], sort=True)[0])
    as_t = lambda s, kind=torch.float64: torch.as_tensor(np.asarray(s), dtype=kind)
    table, _, _ = effects_table(as_t(seg, torch.long), as_t(log.data["recommended"]),
                                as_t(log.data["clicked"]), as_t(fit.propensity_),
                                as_t(fit.mu0_), as_t(fit.mu1_), seg.max() + 1, "aipw",
                                fit.clip, None, 0.05, True, folds=as_t(fit.fold_, torch.long))
    return table


def test_repeats_average_the_splits_estimates_and_variances(log):
    """n_repeats=2: ate = the mean of the two splits' estimates (each split: its own folds,
    as single fits seeded split_seed(0, 0) = 0 and split_seed(0, 1) draw them), se^2 = the mean of var_s + (ate_s -
    ate)^2 (DoubleML's aggregation), split_sd their standard deviation, dof the mean of
    theirs, Student t intervals; psi's item means are the estimates."""
    # every split cross-fitted (this small log would otherwise take the all-rows refit)
    fit = lambda **kw: cr.ItemEffectEstimator(dtype="float64", refit_small_logs=False, **kw).fit(log)
    fits = [fit(seed=split_seed(0, r), n_repeats=1) for r in (0, 1)]
    both = fit(seed=0, n_repeats=2)
    assert all(f.effects_["status"].eq("ok").all() for f in fits + [both])
    tables = [_split_table(f, log) for f in fits]
    ate = (tables[0]["ate"] + tables[1]["ate"]) / 2
    half_gap = (tables[0]["ate"] - tables[1]["ate"]) / 2  # each split's distance to the mean
    se = np.sqrt((tables[0]["se"] ** 2 + tables[1]["se"] ** 2) / 2 + half_gap ** 2)
    dof = (tables[0]["dof"] + tables[1]["dof"]) / 2
    got = both.effects_
    np.testing.assert_allclose(got["ate"], ate, rtol=1e-8)
    np.testing.assert_allclose(got["se"], se, rtol=1e-8)
    np.testing.assert_allclose(got["split_sd"], np.sqrt(2) * half_gap.abs(), rtol=1e-8)
    np.testing.assert_allclose(got["ci_high"], ate + stats.t.ppf(0.975, dof) * se, rtol=1e-8)
    item_psi = both.psi_.groupby(log.data[ITEM].to_numpy()).mean().sort_index()
    np.testing.assert_allclose(item_psi.to_numpy(), got["ate"], rtol=1e-10)
    # the splits differ, so the combined estimate is neither split's
    assert not np.allclose(tables[0]["ate"], tables[1]["ate"], rtol=1e-3)


def test_one_split_is_unchanged(log):
    """n_repeats=1 keeps the single split's table as effects_table gives it;
    combine_splits returns one table as it is, with split_sd NaN (not measured)."""
    fit = cr.ItemEffectEstimator(dtype="float64", seed=0, n_repeats=1).fit(log)
    table = _split_table(fit, log)
    one = combine_splits([table], 0.05)
    pd.testing.assert_frame_equal(one.drop(columns="split_sd"), table)
    assert one["split_sd"].isna().all() and fit.effects_["split_sd"].isna().all()
    # the default (floored) SE is at least the HC3 one the repeats use
    assert (fit.effects_["se"].to_numpy() >= table["se"].to_numpy() * (1 - 1e-12)).all()


def test_overlap_diagnostics_are_averaged_over_splits():
    """The clipped share and effective sizes: the splits' means (post_status judges the
    average split); propensity ranges: their union; data-only columns: as in each split."""
    base = dict(se=[0.1, 0.2], dof=[10.0, 20.0], naive_ate=[0.3, 0.4], mu0_mean=[0.1, 0.1],
                e_min=[0.2, 0.3], e_max=[0.6, 0.7], ess_treated=[10.0, 20.0],
                ess_control=[30.0, 40.0], n_clipped=[0, 2], n_trimmed=[0, 0],
                share_clipped=[0.0, 0.2], share_outside_support=[0.0, 0.1],
                e_min_treated=[0.2, 0.3], e_max_treated=[0.6, 0.7],
                e_min_control=[0.2, 0.3], e_max_control=[0.5, 0.6])
    a = pd.DataFrame({"ate": [0.1, 0.2], **base})
    b = a.assign(ate=[0.3, 0.0], se=[0.3, 0.2], e_min=[0.1, 0.4], n_clipped=[2, 2],
                 share_clipped=[0.4, 0.2], ess_treated=[20.0, 20.0])
    out = combine_splits([a, b], 0.05)
    np.testing.assert_allclose(out["ate"], [0.2, 0.1])
    np.testing.assert_allclose(out["se"], np.sqrt([0.05 + 0.01, 0.04 + 0.01]))  # + (0.1)^2
    np.testing.assert_allclose(out["split_sd"], np.sqrt(2) * np.array([0.1, 0.1]))
    np.testing.assert_allclose(out["share_clipped"], [0.2, 0.2])
    np.testing.assert_allclose(out["ess_treated"], [15.0, 20.0])
    assert out["n_clipped"].tolist() == [1, 2] and out["n_clipped"].dtype == a["n_clipped"].dtype
    np.testing.assert_allclose(out["e_min"], [0.1, 0.3])
    np.testing.assert_allclose(out["naive_ate"], a["naive_ate"])
    assert a["ate"].tolist() == [0.1, 0.2]  # the callers' tables are not modified


def test_n_repeats_auto_and_bad_values(log):
    # pooled: 4 repeats while repeats x fitted rows stay within 4M; per_item: always 4
    from causalrec.estimate.plan import n_repeats
    repeats = lambda n, **kw: n_repeats(cr.ItemEffectEstimator(**kw).get_params(), n)
    assert [repeats(n) for n in (3000, 10**6, 2 * 10**6, 5 * 10**6)] == [4, 4, 2, 1]
    assert repeats(10**7, nuisance="per_item") == 4
    assert repeats(3000, nuisance="boosted") == 1
    assert repeats(3000, nuisance="per_item", n_repeats=2) == 2
    for bad in (0, "many"):
        with pytest.raises(ValueError, match="n_repeats"):
            cr.ItemEffectEstimator(n_repeats=bad).fit(log)


def test_variance_is_that_of_an_average_of_splits():
    """Three splits: se^2 = the splits' mean variance + var_between / 3 (the split noise left
    in a three-split average), not DoubleML's mean of var_s + (ate_s - ate)^2, which charges
    the average a single split's noise, 2/3 var_between."""
    base = dict(se=[0.1], dof=[30.0], naive_ate=[0.0], mu0_mean=[0.1], e_min=[0.2], e_max=[0.6],
                ess_treated=[10.0], ess_control=[30.0], n_clipped=[0], n_trimmed=[0],
                share_clipped=[0.0], share_outside_support=[0.0], e_min_treated=[0.2],
                e_max_treated=[0.6], e_min_control=[0.2], e_max_control=[0.5])
    tables = [pd.DataFrame({**base, "ate": [a], "se": [s]})
              for a, s in ((0.0, 0.1), (0.3, 0.2), (0.6, 0.2))]
    out = combine_splits(tables, 0.05)
    between = np.var([0.0, 0.3, 0.6], ddof=1)  # 0.09
    np.testing.assert_allclose(out["ate"], [0.3])
    np.testing.assert_allclose(out["se"], np.sqrt((0.01 + 0.04 + 0.04) / 3 + between / 3))
    np.testing.assert_allclose(out["split_sd"], np.sqrt(between))
    np.testing.assert_allclose(out["ci_high"], 0.3 + stats.t.ppf(0.975, 30.0) * out["se"])
