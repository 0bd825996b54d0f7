"""Flexible nuisance models: recovery on non-linear logs, no loss on linear ones, per-item
capacity chosen out of fold, stacking, calibration, invariances and bad inputs."""
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

import causalrec as cr
from causalrec.estimate.folds import split_seed
from causalrec.nuisance import (BoostedLearner, FlexibleNuisance, calibration_table,
                                cross_fit_nuisances)
from causalrec.nuisance.select import stack_weights

pytest.importorskip("xgboost")

# 200 items x ~500 rows: large enough for the GLM's bias to dominate its error on the
# non-linear log, small enough for three seeds in a few seconds each
SIM = dict(n_items=200, n_rows=100_000, outcome="continuous", text_confounding=0.0,
           popularity_skew=0.3)


def numeric_roles(sim):
    roles = dict(sim.roles)
    roles.pop("text")
    return roles


def _errors(sim, nuisance, **opts):
    log = cr.InteractionLog(sim.data, **numeric_roles(sim))
    est = cr.ItemEffectEstimator(nuisance=nuisance, **opts).fit(log)
    m = est.effects_.merge(sim.truth[["item", "true_ate"]], on="item")
    covered = (m["ci_low"] <= m["true_ate"]) & (m["true_ate"] <= m["ci_high"])
    return (m["ate"] - m["true_ate"]).to_numpy(), covered.to_numpy(), est


def _runs(nonlinear, seeds):
    """Per-item errors and coverage of the GLM, boosted and auto nuisances, over seeds."""
    runs = {"pooled": [], "boosted": [], "auto": []}
    for seed in seeds:
        sim = cr.datasets.simulate_log(**SIM, nonlinear=nonlinear, seed=seed)
        for name in runs:
            # one split each: the flexible defaults' count (pooled's "auto" would average 4)
            runs[name].append(_errors(sim, name, n_repeats=1)[:2])
    return {name: (np.concatenate([e for e, _ in r]), np.concatenate([c for _, c in r]))
            for name, r in runs.items()}


@pytest.mark.parametrize("nuisance", ["boosted", "auto"])
def test_nonlinear_log_rmse_halved_with_honest_intervals(nonlinear_runs, nuisance):
    """600 per-item effects over three seeds. The GLM's RMSE (~2.7) is mostly the bias a
    linear fit leaves in both nuisances; the flexible ones come near the oracle's ~0.5.
    Coverage of 600 95% intervals has binomial SE 0.009: [0.92, 0.98] is about +-3.3 SE."""
    glm_err, _ = nonlinear_runs["pooled"]
    err, covered = nonlinear_runs[nuisance]
    both = np.isfinite(glm_err) & np.isfinite(err)  # items without overlap have no estimate
    assert both.mean() > 0.99
    rmse = lambda e: np.sqrt(np.mean(e[both] ** 2))
    assert rmse(glm_err) >= 2 * rmse(err)
    assert 0.92 <= covered[both].mean() <= 0.98


@pytest.fixture(scope="module")
def nonlinear_runs():
    return _runs(nonlinear=True, seeds=(0, 1, 2))


@pytest.fixture(scope="module")
def linear_runs():
    return _runs(nonlinear=False, seeds=(0, 1))


@pytest.mark.parametrize("nuisance", ["boosted", "auto"])
def test_linear_log_no_worse_than_the_glm(linear_runs, nuisance):
    """On the GLM's own (linear) log the flexible models may only add noise: within 10%."""
    rmse = lambda e: np.sqrt(np.mean(e ** 2))
    assert rmse(linear_runs[nuisance][0]) <= 1.1 * rmse(linear_runs["pooled"][0])


@pytest.fixture(scope="module")
def small_sim():
    return cr.datasets.simulate_log(n_items=30, n_rows=12_000, outcome="continuous",
                                    text_confounding=0.0, popularity_skew=0.5, nonlinear=True,
                                    seed=4)


def _effects(df, sim, nuisance):
    log = cr.InteractionLog(df, **numeric_roles(sim))
    est = cr.ItemEffectEstimator(nuisance=nuisance).fit(log)
    return est.effects_.set_index("item"), est


@pytest.mark.parametrize("nuisance", ["auto", FlexibleNuisance(min_item_rows=200, n_jobs=2)],
                         ids=["auto", "own-models-in-threads"])
def test_deterministic_and_row_order_invariant(small_sim, nuisance):
    base, fit = _effects(small_sim.data, small_sim, nuisance)
    again, _ = _effects(small_sim.data, small_sim, nuisance)
    pd.testing.assert_frame_equal(base, again, rtol=0, atol=0)
    # the learners see rows in an order fixed by content; only the effects table's float64
    # sums run in the caller's order
    shuffled, _ = _effects(small_sim.data.sample(frac=1.0, random_state=3), small_sim, nuisance)
    pd.testing.assert_frame_equal(base, shuffled.loc[base.index], rtol=1e-9, atol=1e-10)
    if isinstance(nuisance, FlexibleNuisance):  # the case covers models of their own
        assert fit.nuisance_models_["n_own_candidates"].sum() > 0


def test_large_item_with_its_own_surface_gets_its_own_model():
    """Item 0 (4,000 rows) has an outcome surface the others lack (a sine in x0); the tail
    items are linear. Only item 0 should keep a model of its own, and its out-of-fold
    outcome loss should fall toward the noise variance (1)."""
    rng = np.random.default_rng(0)
    sizes = np.r_[4000, np.full(40, 150)]
    item = np.repeat(np.arange(len(sizes)), sizes)
    X = rng.normal(size=(len(item), 3))
    t = (rng.random(len(item)) < 1 / (1 + np.exp(-0.5 * X[:, 1]))).astype(np.int64)
    signal = np.where(item == 0, 3 * np.sin(3 * X[:, 0]), X[:, 0])
    y = signal + X[:, 2] + rng.normal(size=len(item))
    folds = rng.integers(2, size=len(item))
    spec = FlexibleNuisance(min_item_rows=500, n_jobs=2)
    fit = cross_fit_nuisances(X, item, t, y, folds, n_items=len(sizes), family="gaussian",
                              spec=spec, glm=dict(shrinkage=3.0))
    assert fit.items.loc[0, "own_mu0"] and fit.items.loc[0, "own_mu1"]
    assert not fit.items.loc[1:, ["own_mu0", "own_mu1"]].to_numpy().any()
    rows = item == 0
    assert np.mean((y - np.where(t == 1, fit.mu1, fit.mu0))[rows] ** 2) < 1.5
    # more threads, same numbers
    again = cross_fit_nuisances(X, item, t, y, folds, n_items=len(sizes), family="gaussian",
                                spec=FlexibleNuisance(min_item_rows=500, n_jobs=1),
                                glm=dict(shrinkage=3.0))
    np.testing.assert_array_equal(fit.mu1, again.mu1)


def test_stack_weight_follows_the_better_prediction():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=5000)
    target = truth + rng.normal(size=5000)
    noise = rng.normal(scale=3, size=5000)
    assert stack_weights(truth, [noise], target, "gaussian")[0][0] == 0.0
    assert stack_weights(noise, [truth], target, "gaussian")[0][0] == 1.0
    # two equally good, independent errors: the even mix is best
    (w,), _ = stack_weights(truth + rng.normal(size=5000), [truth + rng.normal(size=5000)],
                            target, "gaussian")
    assert 0.4 <= w <= 0.6


def test_calibration_table_flags_miscalibrated_propensities():
    """True propensities are calibrated (|z| within binomial noise in every bin); squared
    ones are not."""
    rng = np.random.default_rng(2)
    e = rng.uniform(0.05, 0.95, size=50_000)
    t = (rng.random(50_000) < e).astype(float)
    good = calibration_table(e, t)
    assert good["n"].sum() == 50_000
    assert np.nanmax(np.abs(good["z"])) < 4
    bad = calibration_table(e ** 2, t)
    assert np.nanmax(np.abs(bad["z"])) > 10


def test_sklearn_pair_runs_per_item_and_pooled(small_sim):
    """A user pair (classifier, regressor) is fitted like the booster and beats the naive
    difference of means by far."""
    pair = (HistGradientBoostingClassifier(max_iter=60, random_state=0),
            HistGradientBoostingRegressor(max_iter=60, random_state=0))
    err, _, est = _errors(small_sim, FlexibleNuisance(pair, min_item_rows=300, n_jobs=2))
    naive = est.effects_.merge(small_sim.truth, on="item")
    naive_err = naive["naive_ate"] - naive["true_ate"]
    assert np.sqrt(np.mean(err ** 2)) < 0.5 * np.sqrt(np.mean(naive_err ** 2))
    assert set(est.nuisance_models_["nuisance"]) == {"e", "mu0", "mu1"}


def test_propensity_model_without_predict_proba_is_a_clear_error(small_sim):
    log = cr.InteractionLog(small_sim.data, **numeric_roles(small_sim))
    with pytest.raises(ValueError, match="predict_proba"):
        cr.ItemEffectEstimator(nuisance=LinearRegression()).fit(log)
    with pytest.raises(ValueError, match="predict_proba"):
        cr.ItemEffectEstimator(nuisance=(LinearRegression(), LinearRegression())).fit(log)
    with pytest.raises(ValueError, match="nuisance must be"):
        cr.ItemEffectEstimator(nuisance="forest").fit(log)
    with pytest.raises(ValueError, match="validation_share"):
        cr.ItemEffectEstimator(nuisance=BoostedLearner(validation_share=1.5)).fit(log)
    with pytest.raises(ValueError, match="min_item_rows"):
        cr.ItemEffectEstimator(nuisance=FlexibleNuisance(min_item_rows=0)).fit(log)


@pytest.mark.parametrize("nuisance", ["boosted", "auto",
                                      (LogisticRegression(max_iter=200), LinearRegression())])
def test_text_confounders_and_logged_propensity(nuisance):
    sim = cr.datasets.simulate_log(n_items=10, n_users=200, n_rows=4_000, popularity_skew=0.3,
                                   nonlinear=True, seed=5)
    roles = dict(sim.roles, outcome="clicked")
    text_est = cr.ItemEffectEstimator(nuisance=nuisance).fit(cr.InteractionLog(sim.data, **roles))
    assert any(c.startswith("user_text") for c in text_est.design_columns_)
    assert np.isfinite(text_est.effects_["ate"]).all()
    assert text_est.propensity_calibration_["n"].sum() == text_est.propensity_.notna().sum()
    logged = cr.ItemEffectEstimator(nuisance=nuisance, clip=0.0).fit(
        cr.InteractionLog(sim.data, **roles, propensity="propensity"))
    fitted = logged.propensity_.notna()
    np.testing.assert_allclose(logged.propensity_[fitted], sim.data["propensity"][fitted],
                               rtol=1e-12)
    assert "e" not in set(logged.nuisance_models_["nuisance"])
    weights = text_est.summary().info["Weight on the flexible model"]
    assert weights.startswith("e ") and "mu1" in weights


def test_nonlinear_mode_keeps_the_linear_draws():
    """Users, items, hours and the item truth's row counts are the default log's; exposure
    and outcomes differ."""
    linear = cr.datasets.simulate_log(n_rows=5_000, seed=3)
    nonlinear = cr.datasets.simulate_log(n_rows=5_000, seed=3, nonlinear=True)
    same = ["user_id", "item_id", "user_activity", "hour", "tenure", "user_text"]
    pd.testing.assert_frame_equal(linear.data[same], nonlinear.data[same])
    assert not np.allclose(linear.data["propensity"], nonlinear.data["propensity"])
    rt = nonlinear.row_truth
    np.testing.assert_allclose(rt["effect"], rt["mu1"] - rt["mu0"])
    assert nonlinear.params["nonlinear"] and not linear.params["nonlinear"]


def test_repeated_splits_average_the_flexible_predictions(small_sim):
    """n_repeats=2 averages the out-of-fold predictions of the seed-0 split and of the split
    a fit seeded split_seed(0, 1) draws (same learners' seeds too)."""
    log = cr.InteractionLog(small_sim.data, **numeric_roles(small_sim))
    fit = lambda **kw: cr.ItemEffectEstimator(nuisance="boosted", **kw).fit(log)
    both, first, second = fit(n_repeats=2), fit(seed=0), fit(seed=split_seed(0, 1))
    np.testing.assert_allclose(both.mu1_, (first.mu1_ + second.mu1_) / 2, rtol=1e-12)
    assert len(both.nuisance_fits_) == 2
    assert both.converged_ and both.n_iter_ >= 1  # the offset GLMs' convergence is reported


def _recurring_log(n_units=300, n_items=12, seed=0):
    """Every unit in every item with the same covariates and treatment (a unit's exposure
    does not depend on the item); each item has its own linear outcome surface and effect."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_units, 4))
    t = (rng.random(n_units) < 1 / (1 + np.exp(-(X[:, 0] - X[:, 1] - 1)))).astype(np.int64)
    beta = rng.normal(size=(n_items, 4))
    tau = rng.normal(1.0, 0.5, size=n_items)
    frames = [pd.DataFrame(X, columns=[f"x{j}" for j in range(4)]).assign(
        item=i, unit=np.arange(n_units), t=t,
        y=X @ beta[i] + 2 * X[:, 0] + tau[i] * t + rng.normal(size=n_units))
        for i in range(n_items)]
    roles = dict(item="item", treatment="t", outcome="y", confounders=["x0", "x1", "x2", "x3"],
                 unit="unit")
    return cr.InteractionLog(pd.concat(frames, ignore_index=True), **roles), tau


@pytest.mark.parametrize("nuisance", [
    "pooled", "boosted",
    (HistGradientBoostingClassifier(max_iter=50), HistGradientBoostingRegressor(max_iter=50))],
    ids=["pooled", "boosted", "sklearn"])
def test_recurring_units_keep_overlap_and_accuracy(nuisance):
    """300 units recur in 12 items (3,600 rows). Row-level copies of a unit used to decide
    early stopping (sklearn's own split held out copies of training units: out-of-fold
    propensities at 0 / 1, every item no_overlap) and passed as 3,600 independent rows to the
    shared slopes' penalty gate. With ``unit=`` every item is estimated and the error is that
    of the per-item OLS with interactions: its RMSE over the 12 items (0.11 here, each
    estimate's SE ~0.13) may be exceeded by at most 60% (a ratio of two RMSEs of 12 draws;
    the code before this change: boosted 1.65x, sklearn and pooled failed)."""
    log, tau = _recurring_log()
    est = cr.ItemEffectEstimator(nuisance=nuisance).fit(log)
    eff = est.effects_.sort_values("item")
    assert (eff["status"] == "ok").all()
    ols = []
    for i, rows in log.data.groupby("item"):
        Xc = rows[["x0", "x1", "x2", "x3"]].to_numpy()
        Xc = Xc - Xc.mean(axis=0)
        tt = rows["t"].to_numpy()[:, None]
        D = np.column_stack([np.ones(len(rows)), tt, Xc, tt * Xc])
        ols.append(np.linalg.lstsq(D, rows["y"].to_numpy(), rcond=None)[0][1])
    rmse = lambda est_: np.sqrt(np.mean((np.asarray(est_) - tau) ** 2))
    assert rmse(eff["ate"]) <= 1.6 * rmse(ols)
    if nuisance == "pooled":  # 300 units < 500 per column: the penalty is chosen by CV
        assert est.shared_penalty_["propensity"] > 1e-4
    else:
        assert "Items by model (out-of-fold loss)" in est.summary().info


def test_sklearn_early_stopping_uses_the_given_validation_rows():
    """A scikit-learn learner that early-stops on an X_val stops on the rows cross-fitting
    holds out (whole units), not on its own random split of the training rows."""
    seen = []

    class Recording(HistGradientBoostingRegressor):
        def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None,
                sample_weight_val=None):
            seen.append((len(X), None if X_val is None else len(X_val)))
            return super().fit(X, y, X_val=X_val, y_val=y_val)

    from causalrec.nuisance import SklearnLearner
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = X[:, 0] + rng.normal(size=400)
    validation = np.arange(400) % 5 == 0
    SklearnLearner(Recording(max_iter=20)).fit_predict(
        X, y, np.zeros(400), X, np.zeros(400), family="gaussian", validation=validation, seed=0)
    assert seen == [(320, 80)]
    seen.clear()  # early_stopping=False is the user's word: all rows, no validation set
    SklearnLearner(Recording(max_iter=20, early_stopping=False)).fit_predict(
        X, y, np.zeros(400), X, np.zeros(400), family="gaussian", validation=validation, seed=0)
    assert seen == [(400, None)]


def test_joint_outcome_model_wins_where_arms_share_a_surface():
    """Both arms share a non-linear surface; treated rows are a fifth and lean to large x0.
    The joint model (both arms, the arm a feature) learns the surface from all rows: it is
    chosen for mu0 and mu1 by out-of-fold loss, and its mu1 error against the true surface
    is lower than without it, on treated rows and, by more, on the controls, where a model of
    the treated rows alone extrapolates (seed 1: 0.28 vs 0.45 and 0.30 vs 1.04; noise 1)."""
    rng = np.random.default_rng(1)
    n = 6000
    X = rng.normal(size=(n, 3))
    t = (rng.random(n) < 1 / (1 + np.exp(-(X[:, 0] - 1.5)))).astype(np.int64)
    surface = 3 * np.sin(2 * X[:, 0]) + 2 * np.cos(2 * X[:, 1])
    y = surface + 0.5 * t + rng.normal(size=n)
    item, folds = np.zeros(n, np.int64), rng.integers(2, size=n)
    fit = lambda joint: cross_fit_nuisances(
        X, item, t, y, folds, n_items=1, family="gaussian",
        spec=FlexibleNuisance(joint_outcome=joint), glm=dict(shrinkage=3.0))
    with_joint, without = fit(True), fit(False)
    assert set(with_joint.items.loc[0, ["model_mu0", "model_mu1"]]) <= {"joint", "joint_own"}
    err = lambda r, rows: np.mean((r.mu1 - surface - 0.5)[rows] ** 2)
    assert err(with_joint, t == 1) < 0.8 * err(without, t == 1)
    assert err(with_joint, t == 0) < 0.5 * err(without, t == 0)


def test_recurring_covariate_rows_without_a_unit_role_keep_overlap():
    """The same log without ``unit=``: its covariate rows recur across items and are distinct
    within each, so early stopping holds out each row's copies together (``recurring_rows``);
    before, the booster stopped on copies of its training units and marked items no_overlap."""
    from causalrec.nuisance.crossfit import recurring_rows
    log, tau = _recurring_log()
    data = log.data.drop(columns="unit")
    roles = dict(item="item", treatment="t", outcome="y", confounders=["x0", "x1", "x2", "x3"])
    eff = cr.ItemEffectEstimator(nuisance="boosted").fit(cr.InteractionLog(data, **roles)).effects_
    assert (eff["status"] == "ok").all()
    assert np.sqrt(np.mean((eff.sort_values("item")["ate"].to_numpy() - tau) ** 2)) < 0.5
    # a few covariate cells repeated within items are no units
    cells = np.arange(1000) % 10
    assert not recurring_rows(cells, cells)
    assert recurring_rows(np.tile(np.arange(100), 10), np.arange(1000))


def _two_large_items_and_a_tail(n_tail):
    """Two items of 1,500 rows with a non-linear surface shared by the arms, and ``n_tail``
    items of 80 rows."""
    rng = np.random.default_rng(7)
    sizes = np.r_[1500, 1500, np.full(n_tail, 80)]
    item = np.repeat(np.arange(len(sizes)), sizes)
    X = rng.normal(size=(len(item), 4))
    t = (rng.random(len(item)) < 1 / (1 + np.exp(-X[:, 1]))).astype(np.int64)
    y = 2 * np.sin(2 * X[:, 0]) + X[:, 2] + 0.5 * t + rng.normal(size=len(item))
    return X, item, t, y, rng.integers(2, size=len(item)), len(sizes)


def test_only_candidates_that_can_win_are_fitted():
    """Every item large: no pooled booster (it would only compete with the items' own), no
    per-arm outcome boosters beside the joint one (``per_arm_outcome="auto"``), no tail
    learner in auto's stack; with a tail of small items all three are back."""
    spec = FlexibleNuisance(min_item_rows=500, auto=True, also=("factorised",))
    X, item, t, y, folds, n_items = _two_large_items_and_a_tail(0)
    fit = cross_fit_nuisances(X, item, t, y, folds, n_items=n_items, family="gaussian",
                              spec=spec, glm=dict(shrinkage=3.0))
    assert fit.rounds["e"] == [0, 0] and fit.rounds["joint"] == [0, 0]
    assert fit.rounds["mu0"] == fit.rounds["mu1"] == []
    models = fit.models.set_index("nuisance")
    assert models["loss_pooled"].isna().all() and models["loss_factorised"].isna().all()
    assert (models["weight_factorised"] == 0).all()
    assert set(fit.items[["model_e", "model_mu0", "model_mu1"]].to_numpy().ravel()) <= {
        "glm", "own", "joint_own"}
    assert np.isfinite(np.c_[fit.e, fit.mu0, fit.mu1]).all()
    # per-arm outcome boosters on request (an arm's ~375 training rows per item make both
    # items tail items there: the per-arm pooled booster is fitted, one per fold)
    per_arm = cross_fit_nuisances(X, item, t, y, folds, n_items=n_items, family="gaussian",
                                  spec=FlexibleNuisance(min_item_rows=500, per_arm_outcome=True),
                                  glm=dict(shrinkage=3.0))
    assert all(len(r) == 2 and min(r) > 0 for r in (per_arm.rounds["mu0"], per_arm.rounds["mu1"]))
    assert per_arm.models.set_index("nuisance").loc[["mu0", "mu1"], "loss_pooled"].notna().all()
    # with a tail of small items the pooled booster and the factorised learner are fitted
    X, item, t, y, folds, n_items = _two_large_items_and_a_tail(12)
    fit = cross_fit_nuisances(X, item, t, y, folds, n_items=n_items, family="gaussian",
                              spec=spec, glm=dict(shrinkage=3.0))
    assert min(fit.rounds["e"] + fit.rounds["joint"] + fit.rounds["mu0"] + fit.rounds["mu1"]) > 0
    assert fit.models["loss_factorised"].notna().all()


def test_offset_propensity_penalty_chosen_where_units_are_few_per_column():
    """On a log with few rows per column the flexible path's offset GLMs take their
    shared-slope penalty from the GLM path's grid by out-of-fold loss (reported per
    nuisance), as the pooled GLM does; on a log with many rows per column nothing is tuned.
    IHDP, 100 items stacked with unit=: boosted RMSE 0.256 -> 0.190 (A), 0.242 -> 0.176 (B),
    benchmarks/README.md."""
    from causalrec.estimate.nuisance import penalty_grid, tunes_shared_penalty
    rng = np.random.default_rng(0)
    n, d = 600, 25
    X = rng.standard_normal((n, d))
    t = (rng.random(n) < 1 / (1 + np.exp(1.5 - X[:, 0] + 0.5 * X[:, 1]))).astype(int)
    y = X[:, :5].sum(axis=1) + t + rng.standard_normal(n)
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(d)]).assign(item="a", t=t, y=y)
    log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                            confounders=[f"x{j}" for j in range(d)])
    assert tunes_shared_penalty(n, d)
    models = cr.ItemEffectEstimator(nuisance="boosted", n_repeats=1).fit(log) \
        .nuisance_models_.set_index("nuisance")["offset_shared_penalty"]
    assert models["e"] in penalty_grid(d) and models["e"] > 1e-4  # this propensity wants a ridge
    assert models[["mu0", "mu1"]].isin(penalty_grid(d)).all()
    sim = cr.datasets.simulate_log(n_items=5, n_rows=20_000, text_confounding=0.0, seed=2)
    big = cr.ItemEffectEstimator(nuisance="boosted", n_repeats=1).fit(
        cr.InteractionLog(sim.data, **numeric_roles(sim)))
    assert big.nuisance_models_["offset_shared_penalty"].isna().all()


def _one_item_against_the_rule(own_rule):
    """Item 0 (3,000 rows) beside 40 items of 300 that assign by a steep rule in x0 (logit
    4 x0); item 0 follows it or assigns by a mild rule in x1 instead. The item deviations'
    prior is made so strong (shrinkage 1e5) that the offset GLM gives item 0 the others'
    slope: overconfident where item 0's propensity is near 0.5."""
    rng = np.random.default_rng(0)
    sizes = np.r_[3000, np.full(40, 300)]
    item = np.repeat(np.arange(len(sizes)), sizes)
    X = rng.normal(size=(len(item), 3))
    logit = np.where(item == 0, 0.3 * X[:, 1], 4.0 * X[:, 0]) if own_rule else 4.0 * X[:, 0]
    e = 1 / (1 + np.exp(-logit))
    t = (rng.random(len(item)) < e).astype(np.int64)
    y = X[:, 0] + X[:, 2] + 0.5 * t + rng.normal(size=len(item))
    folds = rng.integers(2, size=len(item))
    fit = cross_fit_nuisances(X, item, t, y, folds, n_items=len(sizes), family="gaussian",
                              spec=FlexibleNuisance(min_item_rows=1000), glm=dict(shrinkage=1e5))
    return fit, e, t, item == 0


def test_an_item_with_its_own_assignment_rule_gets_a_propensity_free_of_the_offset():
    """Where the offset carries the other items' rule into a large item's propensity, a
    booster on top of it cannot undo it (the offset's near-0 and near-1 propensities leave
    the trees no curvature to split on); the item's own model from its base rate can, and
    wins by out-of-fold loss (measured on item 0's rows: log loss 0.696, against 0.706 for the
    booster on the offset and 0.684 for the true propensity). Where the item follows the
    others' rule, the free model does not win clearly and the offset ones stay."""
    fit, e, t, rows = _one_item_against_the_rule(own_rule=True)
    assert fit.items.loc[0, "model_e"] == "own_free" and fit.items.loc[0, "own_e"]
    loss = lambda p: -np.mean(t[rows] * np.log(p[rows]) + (1 - t[rows]) * np.log1p(-p[rows]))
    assert loss(fit.e) < loss(e) + 0.02  # the offset's booster: + 0.022
    fit, e, t, rows = _one_item_against_the_rule(own_rule=False)
    assert "own_free" not in set(fit.items["model_e"])


def test_a_challenger_is_kept_only_where_it_wins_clearly():
    """clear_winner: per item, the challenger's summed loss gain over the best other candidate
    must reach z paired standard errors. Gains of 0.1 and 0.005 a row, +-0.05 alternating,
    over 100 rows: z = 20 on item 0 (kept), z = 1 on item 1 (the runner-up instead)."""
    from causalrec.nuisance.select import choose_model, clear_winner
    item = np.repeat([0, 1], 100)
    base = np.random.default_rng(0).random(200)
    gain = np.where(item == 0, 0.1, 0.005) + 0.05 * np.resize([1.0, -1.0], 200)
    losses = [base, base + 0.02, base - gain]  # glm, own, challenger
    chosen = choose_model(losses, item, 2)
    assert list(chosen) == [2, 2]
    assert list(clear_winner(chosen, losses, item, 2, challenger=2)) == [2, 0]


@pytest.mark.parametrize("categorical", [False, True])
def test_fits_on_several_offsets_share_rows_and_equal_separate_fits(categorical):
    """fit_predict_offsets builds the rows' matrices once for all offsets; each fit must be
    exactly the fit on that offset alone (rounds included): nothing of an earlier offset's
    fit (its base margin, its booster) carries over to the next."""
    rng = np.random.default_rng(3)
    n = 1500
    X = np.c_[rng.normal(size=(n, 3)), rng.integers(0, 4, n)] if categorical \
        else rng.normal(size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0]))).astype(float)
    offsets = [np.zeros(n), 0.5 * X[:, 1], np.full(n, -0.3)]
    X_test = X[:200]
    tests = [o[:200] for o in offsets]
    kw = dict(family="logistic", validation=rng.random(n) < 0.2, seed=5, categorical=categorical)
    learner = BoostedLearner()
    together = learner.fit_predict_offsets(X, y, offsets, X_test, tests, **kw)
    for (pred, rounds), offset, test in zip(together, offsets, tests):
        alone, alone_rounds = learner.fit_predict(X, y, offset, X_test, test, **kw)
        np.testing.assert_array_equal(pred, alone)
        assert rounds == alone_rounds
    assert len({r for _, r in together}) > 1 or not np.allclose(together[0][0], together[2][0])


@pytest.mark.parametrize("spec", [
    FlexibleNuisance(min_item_rows=500, auto=True, also=("factorised",)),
    FlexibleNuisance(min_item_rows=500, learner=BoostedLearner(max_depth=3))])
def test_propensity_and_joint_outcome_share_matrices_with_the_same_numbers(monkeypatch, spec):
    """The propensity's boosters leave their training matrices (the arm a column they skip)
    to the joint outcome model's on the same rows: two large items (own boosters) and a tail
    (pooled booster, and a factorised learner in auto's stack, which must never see the
    arm). Every prediction equals the fit without sharing, bit for bit, and each shared
    matrix is used twice and then dropped."""
    import causalrec.nuisance.foldfits as foldfits
    X, item, t, y, folds, n_items = _two_large_items_and_a_tail(12)
    fit = lambda: cross_fit_nuisances(X, item, t, y, folds, n_items=n_items, family="gaussian",
                                      spec=spec, glm=dict(shrinkage=3.0))
    built = []
    original = foldfits.FoldFits._slot

    def counting_slot(self, fold, j, release):
        slot = original(self, fold, j, release)
        built.append((fold, j, release, None if self.matrices is None else len(self.matrices)))
        return slot

    monkeypatch.setattr(foldfits.FoldFits, "_slot", counting_slot)
    shared = fit()
    # per fold: the pooled rows and the two large items' rows, stored by e, taken by joint
    calls = [(f, j, r) for f, j, r, _ in built]
    assert len(calls) == 12 and set(calls) == {
        (f, j, r) for f in (0, 1) for j in (None, 0, 1) for r in (False, True)}
    assert built[-1][3] == 0  # every slot released
    monkeypatch.setattr(foldfits, "SHARED_MATRIX_VALUES", 0)
    built.clear()
    alone = fit()
    assert not built or all(n is None for *_, n in built)
    for name in ("e", "mu0", "mu1"):
        np.testing.assert_array_equal(getattr(shared, name), getattr(alone, name))
    pd.testing.assert_frame_equal(shared.models, alone.models)
    assert shared.rounds == alone.rounds


def test_a_skipped_column_never_enters_the_trees(monkeypatch):
    """``skip``: a propensity fitted on the joint model's columns (the arm, its label, among
    them) gives the fit without that column; where XGBoost's weighted column draw lets the
    skipped column in anyway (a zero weight is raised to 1e-6), the fit is made again without
    it (forced here: every booster reports using it)."""
    import xgboost
    rng = np.random.default_rng(4)
    n = 1200
    X = rng.normal(size=(n, 3))
    t = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0]))).astype(float)
    with_t = np.c_[X, t]
    kw = dict(family="logistic", validation=rng.random(n) < 0.2, seed=2)
    learner, offsets = BoostedLearner(), [np.zeros(n)]
    alone = learner.fit_predict_offsets(X, t, offsets, X[:300], [np.zeros(300)], **kw)
    skipped = learner.fit_predict_offsets(with_t, t, offsets, with_t[:300], [np.zeros(300)],
                                          skip=3, **kw)
    leaky = learner.fit_predict(with_t, t, offsets[0], with_t[:300], np.zeros(300), **kw)
    np.testing.assert_array_equal(skipped[0][0], alone[0][0])
    assert np.abs(leaky[0] - t[:300]).max() < 0.1  # with the arm, the label is learnt
    calls = []
    real = xgboost.Booster.get_score
    monkeypatch.setattr(xgboost.Booster, "get_score", lambda self, **k: calls.append(1) or {
        **real(self, **k), "f3": 1.0})
    matrices = {}
    again = learner.fit_predict_offsets(with_t, t, offsets, with_t[:300], [np.zeros(300)],
                                        skip=3, matrices=matrices, **kw)
    assert calls and set(matrices) == {"train", "valid"}
    np.testing.assert_array_equal(again[0][0], alone[0][0])
    assert again[0][1] == alone[0][1]


def test_flexible_fits_ignore_the_roles_order_and_the_item_labels():
    """The boosters' columns come in an order set by their content and an item enters them by
    its rows' content: reversing the confounder roles, or relabelling the items (a
    permutation of their int ids, or the same ids as text), gives the same estimates. Before,
    XGBoost's column-index tie-breaks and the item's code as its category moved them by up
    to 0.15 SE."""
    s = cr.datasets.simulate_log(n_items=12, n_users=600, n_rows=4000, seed=1)
    df = s.data.drop(columns=["user_text", "item_text", "propensity"])
    relabel = dict(zip(range(12), np.random.default_rng(0).permutation(12) + 100))
    conf, cat = ["user_activity", "hour", "tenure"], ["device", "user_group"]

    def effects(frame, conf=conf, cat=cat, back=None):
        log = cr.InteractionLog(frame, item="item_id", treatment="recommended", outcome="clicked",
                                confounders=conf, categorical=cat, unit="user_id")
        table = cr.ItemEffectEstimator(nuisance="boosted", dtype="float64").fit(log).effects_
        table["item"] = table["item"].map(back or (lambda i: i)).astype(np.int64)
        return table.set_index("item").sort_index()

    base = effects(df)
    back = {v: k for k, v in relabel.items()}
    for other in (effects(df, conf[::-1], cat[::-1]),
                  effects(df.assign(item_id=df["item_id"].map(relabel)), back=back.get),
                  effects(df.assign(item_id=df["item_id"].astype(str)), back=int)):
        np.testing.assert_allclose(other["ate"], base["ate"], rtol=0, atol=1e-9 * base["se"].min())


def test_content_column_order_is_free_of_positions_rows_and_dtype():
    from causalrec.utils.hashing import content_column_order
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=(500, 3)), rng.integers(0, 2, (500, 2)), rng.integers(0, 5, 500)]
    X[:, 4] = np.roll(X[:, 3], 7)  # the same values as column 3 in another arrangement
    order = content_column_order(X)
    canonical = X[:, order]
    for perm in (np.arange(6)[::-1], rng.permutation(6)):
        shuffled = X[rng.permutation(500)][:, perm]
        np.testing.assert_array_equal(np.sort(shuffled[:, content_column_order(shuffled)], 0),
                                      np.sort(canonical, 0))
        same_rows = X[:, perm]
        np.testing.assert_array_equal(same_rows[:, content_column_order(same_rows)], canonical)
    np.testing.assert_array_equal(content_column_order(X.astype(np.float32)), order)
    assert content_column_order(X, chunk_rows=64).tolist() == order.tolist()
