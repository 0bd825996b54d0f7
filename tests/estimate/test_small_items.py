"""One small item per call (issue 28): the pooled models' shared-slope ridge is chosen by
out-of-fold loss where rows are few per column, so a few hundred rows and 25 confounders no
longer give a near-unpenalised propensity that collapses the treated arm's weights."""
import warnings

import numpy as np
import pandas as pd

import causalrec as cr
from causalrec.estimate.folds import split_seed
from causalrec.estimate.nuisance import SHARED_PENALTY_GRID, tunes_shared_penalty
from causalrec.nuisance import FlexibleNuisance

N_ROWS, N_COLUMNS, EFFECT = 500, 25, 1.0


def small_log(seed):
    """IHDP-like: 500 rows, 25 confounders (half 0/1), ~20% treated by a logistic policy,
    a linear outcome with a constant effect (so OLS with interactions is correctly specified)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_ROWS, N_COLUMNS))
    X[:, N_COLUMNS // 2:] = (X[:, N_COLUMNS // 2:] > 0.5).astype(float)
    a = np.r_[0.8, -0.6, 0.5, np.zeros(N_COLUMNS - 3)]
    a[N_COLUMNS // 2] = 1.0
    t = (rng.random(N_ROWS) < 1 / (1 + np.exp(1.8 - X @ a))).astype(int)
    y = X @ rng.choice([0.0, 0.5, 1.0], size=N_COLUMNS) + EFFECT * t + rng.standard_normal(N_ROWS)
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(N_COLUMNS)])
    df["item"], df["t"], df["y"] = "a", t, y
    return df


def ols_with_interactions(df):
    X = df.filter(like="x").to_numpy()
    t, y = df["t"].to_numpy(), df["y"].to_numpy()
    Xc = X - X.mean(axis=0)
    design = np.column_stack([np.ones(len(y)), t, Xc, t[:, None] * Xc])
    return np.linalg.lstsq(design, y, rcond=None)[0][1]


def test_one_small_item_close_to_ols_with_interactions_and_far_better_than_naive():
    """20 fixed replications. Measured: RMSE ours / OLS 1.11 (session 32: the chosen models
    refitted on every row, ``refit_small_logs``), 1.26 every split cross-fitted (60
    replications: 1.04 against 1.17), 1.96 with the old near-zero shared ridge; the naive
    difference is 4.9x OLS. The bound 1.5 fails on the old code; the estimates of both methods
    share each replication's noise, so their ratio moves far less than each RMSE's own ~16%
    (1/sqrt(2R)). The refit is paired with the cross-fitted fit on the same logs (0.140
    against 0.160 here, 0.127 against 0.143 over 60): it must not be the worse of the two."""
    errors = {"ours": [], "cross_fitted": [], "ols": [], "naive": []}
    for seed in range(20):
        df = small_log(seed)
        for name, refit in (("ours", True), ("cross_fitted", False)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                eff = cr.estimate_item_effects(df, "item", "t", "y", refit_small_logs=refit,
                                               confounders=[c for c in df if c.startswith("x")])
            assert eff["status"].iloc[0] == "ok"
            errors[name].append(eff["ate"].iloc[0] - EFFECT)
        errors["ols"].append(ols_with_interactions(df) - EFFECT)
        errors["naive"].append(df.y[df.t == 1].mean() - df.y[df.t == 0].mean() - EFFECT)
    rmse = {k: np.sqrt(np.mean(np.square(v))) for k, v in errors.items()}
    assert rmse["ours"] <= 1.5 * rmse["ols"]
    assert rmse["ours"] <= 0.5 * rmse["naive"]
    assert rmse["ours"] <= rmse["cross_fitted"]


def test_per_item_on_one_small_item_tunes_its_ridge_close_to_ols():
    """per_item's own slopes had a fixed ridge of 1: on 500 rows and 25 columns its
    propensity overfitted as the pooled shared slopes did (RMSE 1.52x OLS with interactions
    on these 20 logs). Now its ridge is chosen from the same grid where every item is small,
    the chosen models refitted on every row: 1.13x (pooled 1.12x). The bound 1.35 fails on
    the old code; the ratio shares each log's noise (see the test above)."""
    errors, covered = {"per_item": [], "ols": []}, []
    for seed in range(20):
        df = small_log(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eff = cr.estimate_item_effects(df, "item", "t", "y", nuisance="per_item",
                                           confounders=[c for c in df if c.startswith("x")])
        assert eff["status"].iloc[0] == "ok"
        errors["per_item"].append(eff["ate"].iloc[0] - EFFECT)
        covered.append(eff["ci_low"].iloc[0] <= EFFECT <= eff["ci_high"].iloc[0])
        errors["ols"].append(ols_with_interactions(df) - EFFECT)
    rmse = {k: np.sqrt(np.mean(np.square(v))) for k, v in errors.items()}
    assert rmse["per_item"] <= 1.35 * rmse["ols"]
    assert sum(covered) >= 16  # 19 of 20 measured; P(<= 15 | 0.95) < 2%


def test_small_log_estimate_from_all_rows_variance_from_leave_one_out_predictions():
    """With refit_small_logs the chosen models are refitted on every row: the estimate moves,
    the variance is that of the all-rows fits' leave-one-out predictions: larger than the
    in-sample influence values' (the fit shrinks its own residuals) and not above the
    cross-fitted fit's (models of half the rows; measured 0.126 / 0.129 here, in-sample
    0.101), and the treated rows' residuals of the all-rows outcome model sum to ~0 (a
    least-squares fit with a nearly free intercept on those very rows)."""
    df = small_log(2)
    log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                            confounders=[c for c in df if c.startswith("x")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {refit: cr.ItemEffectEstimator(dtype="float64", n_repeats=1,
                                              refit_small_logs=refit).fit(log)
                for refit in (True, False)}
    refit, crossed = fits[True], fits[False]
    assert refit.shared_penalty_ == crossed.shared_penalty_
    se, psi = refit.effects_["se"].iloc[0], refit.psi_.to_numpy()
    assert 1.1 * psi.std(ddof=1) / np.sqrt(len(psi)) < se <= 1.0 * crossed.effects_["se"].iloc[0]
    assert refit.effects_["ate"].iloc[0] != crossed.effects_["ate"].iloc[0]
    treated = df["t"].to_numpy() == 1
    residual = {k: (df["y"] - f.mu1_).to_numpy()[treated].mean() for k, f in fits.items()}
    assert abs(residual[True]) < 1e-2 * df["y"].std()
    assert abs(residual[True]) < abs(residual[False])


def test_shared_penalty_chosen_only_where_rows_are_few_per_column():
    df = small_log(0)
    roles = dict(item="item", treatment="t", outcome="y",
                 confounders=[c for c in df if c.startswith("x")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = cr.ItemEffectEstimator().fit(cr.InteractionLog(df, **roles))
    grid = {max(c * N_COLUMNS, 1e-4) for c in SHARED_PENALTY_GRID}
    assert set(est.shared_penalty_) == {"propensity", "outcome"}
    assert set(est.shared_penalty_.values()) <= grid
    assert est.shared_penalty_["propensity"] > 1e-4  # this overfitting-prone fit wants a ridge
    assert tunes_shared_penalty(N_ROWS, N_COLUMNS)
    assert not tunes_shared_penalty(1_000_000, 64)
    per_item = cr.ItemEffectEstimator(nuisance="per_item", n_repeats=1).fit(
        cr.InteractionLog(df, **roles))
    # per_item: each item's slopes, from its own penalty (1) up
    assert set(per_item.shared_penalty_.values()) <= {1.0} | grid - {1e-4}
    assert per_item.shared_penalty_["propensity"] > 1.0
    big = cr.InteractionLog(pd.concat([df] * 40, ignore_index=True), **roles)
    assert cr.ItemEffectEstimator(nuisance="per_item", n_repeats=1).fit(
        big).shared_penalty_ == {"propensity": 1.0, "outcome": 1.0}  # 20,000 rows: untuned


def test_each_split_chooses_its_own_penalty():
    """Repeats average single fits (each split's choice is its own): n_repeats=2 equals the
    mean of the outcome predictions of single fits seeded split_seed(0, 0) and split_seed(0, 1)
    (every split cross-fitted: the all-rows refit is one fit per split, not a mean of folds)."""
    df = small_log(1)
    log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                            confounders=[c for c in df if c.startswith("x")])
    fit = lambda **kw: cr.ItemEffectEstimator(dtype="float64", refit_small_logs=False, **kw).fit(log)
    fits = [fit(seed=split_seed(0, r), n_repeats=1) for r in (0, 1)]
    both = fit(seed=0, n_repeats=2)
    pd.testing.assert_series_equal(both.mu1_, (fits[0].mu1_ + fits[1].mu1_) / 2, rtol=1e-10)


def test_summary_states_where_the_estimate_comes_from():
    """The refit changes what the estimate and per-row outputs are (all-rows fits, variance
    out of fold): the summary says so where an analyst reads it, and only where it applies."""
    df = small_log(0)
    log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                            confounders=[c for c in df if c.startswith("x")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines = {refit: str(cr.ItemEffectEstimator(n_repeats=1, refit_small_logs=refit)
                            .fit(log).summary()) for refit in (True, False)}
    assert ("all-rows fits (small log refit); variance from their leave-one-out predictions"
            in lines[True])
    assert "all-rows fits" not in lines[False] and "out-of-fold fits (cross-fitted)" in lines[False]
    no_control = log.data.assign(t=1)  # no item estimable: no fit to describe
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        none = cr.ItemEffectEstimator(n_repeats=1).fit(
            cr.InteractionLog(no_control, item="item", treatment="t", outcome="y",
                              confounders=[c for c in df if c.startswith("x")]))
    assert none.summary().info["Estimate from"] == "no item estimated"


def test_flexible_small_items_estimate_from_all_rows_offset_glm():
    """The flexible nuisances on a small log: a small item's estimate adds the offset GLM's
    all-rows refit to the out-of-fold flexible models (link scale), its variance reads the
    same with the refit's approximate leave-one-out linear predictor (measured z RMS 0.91
    over the 12 replications; 12 standard normal z give an RMS within 1 +- 0.4 about 95%
    of the time). 12 fixed replications, paired on the same logs; measured: RMSE 0.145
    with the refit, 0.193 cross-fitted (ratio 0.76), OLS with interactions 0.151 (IHDP, 100
    items stacked with unit=: boosted 0.190 -> 0.140 on A, 0.176 -> 0.128 on B,
    benchmarks/README.md session 33). The code before (every prediction out of fold) fails
    both bounds: a ratio of exactly 1, and 1.27x OLS. The bounds leave ~15% for other
    platforms' rounding of the boosters."""
    errors = {True: [], False: []}
    ols, z = [], []
    for seed in range(12):
        df = small_log(seed)
        log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                                confounders=[c for c in df if c.startswith("x")])
        fits = {}
        for refit in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fits[refit] = cr.ItemEffectEstimator(nuisance="boosted", n_repeats=1,
                                                     refit_small_logs=refit).fit(log)
            errors[refit].append(fits[refit].effects_["ate"].iloc[0] - EFFECT)
        ols.append(ols_with_interactions(df) - EFFECT)
        z.append(errors[True][-1] / fits[True].effects_["se"].iloc[0])
    assert 0.6 <= np.sqrt(np.mean(np.square(z))) <= 1.4
    rmse = {k: np.sqrt(np.mean(np.square(v))) for k, v in errors.items()}
    assert rmse[True] <= 0.9 * rmse[False]
    assert rmse[True] <= 1.15 * np.sqrt(np.mean(np.square(ols)))


def test_flexible_refit_leaves_large_items_out_of_fold():
    """Items with models of their own (at least ``min_item_rows`` training rows in every
    fold) keep out-of-fold predictions: on ACIC's 10 items of 4,802 rows the refit moved
    RMSE 0.122 -> 0.140 (session 33). Here the one item is large for min_item_rows=100, so
    the refit changes nothing; with the default (1,000) it is small and its estimate moves,
    and the summary says where the estimate comes from."""
    df = small_log(3)
    log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                            confounders=[c for c in df if c.startswith("x")])
    fit = lambda spec, refit: cr.ItemEffectEstimator(
        nuisance=spec, n_repeats=1, refit_small_logs=refit).fit(log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        large = {refit: fit(FlexibleNuisance(min_item_rows=100), refit) for refit in (True, False)}
        small = {refit: fit("boosted", refit) for refit in (True, False)}
    pd.testing.assert_frame_equal(large[True].effects_, large[False].effects_)
    assert small[True].effects_["ate"].iloc[0] != small[False].effects_["ate"].iloc[0]
    assert "out-of-fold fits (cross-fitted)" in str(large[True].summary())
    assert "all-rows offset GLMs plus out-of-fold flexible models" in str(small[True].summary())


def stacked_log(seed, n_units=200, n_columns=10, n_items=12):
    """Units recurring across items (``unit=``), one assignment rule for every item and an
    outcome surface of each item's own (slopes N(0, 2^2) per item, as IHDP's replications
    stacked): the items' deviations from the shared slopes are large, the propensity's none."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_units, n_columns))
    t_logit = -1.0 + X[:, :3] @ np.array([0.8, -0.6, 0.5])
    frames = []
    for k in range(n_items):
        t = (rng.random(n_units) < 1 / (1 + np.exp(-t_logit))).astype(int)
        y = X @ (2.0 * rng.standard_normal(n_columns)) + EFFECT * t + rng.standard_normal(n_units)
        frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(n_columns)])
        frame["unit"], frame["item"], frame["t"], frame["y"] = np.arange(n_units), f"i{k:02d}", t, y
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_outcome_models_choose_the_items_deviation_ridge_on_small_logs():
    """Few units per column and several items: ``shrinkage="auto"`` chooses the outcome
    models' ridge on the items' deviations by out-of-fold loss (here below d: each item has
    its own surface), the propensity keeps d, and a given number is kept as given. Over 4
    logs x 12 items, against the same fits with the ridge fixed at d: measured RMSE 0.201
    against 0.225 (paired: the logs' noise is shared), median SE 0.21 against 0.28, coverage
    0.98 either way. The SE bar (0.85x) and the RMSE order fail on the old code, where
    "auto" was d; coverage is bounded 3 binomial sds (48 estimates) under 0.95."""
    d = 10
    errors, ses = {"auto": [], d: []}, {"auto": [], d: []}
    for seed in range(4):
        df = stacked_log(seed, n_columns=d)
        log = cr.InteractionLog(df, item="item", treatment="t", outcome="y", unit="unit",
                                confounders=[f"x{j}" for j in range(d)])
        for shrinkage in errors:
            est = cr.ItemEffectEstimator(shrinkage=shrinkage).fit(log)
            assert (est.effects_["status"] == "ok").all()
            errors[shrinkage] += list(est.effects_["ate"] - EFFECT)
            ses[shrinkage] += list(est.effects_["se"])
            assert est.shrinkage_["propensity"] == d
            if shrinkage == "auto":
                assert est.shrinkage_["outcome"] < d
            else:
                assert est.shrinkage_["outcome"] == d
    rmse = {k: np.sqrt(np.mean(np.square(v))) for k, v in errors.items()}
    assert rmse["auto"] < rmse[d]
    assert np.median(ses["auto"]) < 0.85 * np.median(ses[d])
    covered = np.abs(errors["auto"]) <= 1.96 * np.array(ses["auto"])
    assert covered.mean() >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / covered.size)
    # the boosted path's offset GLMs choose the outcome models' ridge the same way
    boosted = cr.ItemEffectEstimator(nuisance="boosted").fit(log)
    models = boosted.nuisance_models_.set_index("nuisance")["offset_shrinkage"]
    assert np.isnan(models["e"]) and (models[["mu0", "mu1"]] < d).all()
    # one item: its slopes are the shared ones plus its deviation, so nothing is chosen
    one = cr.ItemEffectEstimator().fit(cr.InteractionLog(
        df[df["item"] == "i00"], item="item", treatment="t", outcome="y",
        confounders=[f"x{j}" for j in range(d)]))
    assert one.shrinkage_ == {"propensity": d, "outcome": d}
