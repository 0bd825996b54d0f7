"""The batched per-item effect estimator: correctness against references, statistics,
invariances and bad inputs."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import causalrec as cr
from causalrec.glm import layout as glm_layout
from causalrec.estimate.design import build_design
from causalrec.estimate.folds import split_seed
from causalrec.estimate.scores import PRIOR_DOF
from causalrec.schema import SchemaError


def numeric_roles(sim):
    roles = dict(sim.roles)
    roles.pop("text")
    return roles


def test_estimator_per_item_propensities_equal_sklearn():
    sim = cr.datasets.simulate_log(n_items=50, n_users=800, n_rows=30_000, popularity_skew=0.3,
                                   seed=3)
    roles = numeric_roles(sim)
    log = cr.InteractionLog(sim.data, **roles)
    est = cr.ItemEffectEstimator(nuisance="per_item", n_folds=1, intercept_penalty=0.0,
                                 clip=0.0, dtype="float64", penalty=1.0).fit(log)
    X = build_design(log, dtype=np.float64).X
    t = sim.data["recommended"].to_numpy()
    y = sim.data["clicked"].to_numpy()
    worst_e = worst_mu = 0.0
    for k in est.effects_.loc[est.effects_["status"] != "no_treated", "item"]:
        rows = (sim.data["item_id"] == k).to_numpy()
        ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(X[rows], t[rows])
        worst_e = max(worst_e, np.abs(ref.predict_proba(X[rows])[:, 1]
                                      - est.propensity_[rows]).max())
        treated = rows & (t == 1)
        if len(np.unique(y[treated])) == 2:
            ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(X[treated], y[treated])
            worst_mu = max(worst_mu, np.abs(ref.predict_proba(X[rows])[:, 1] - est.mu1_[rows]).max())
    assert (est.effects_["status"] != "no_treated").sum() >= 45
    assert worst_e < 1e-4 and worst_mu < 1e-4


def _replicate(seed, nuisance="pooled"):
    sim = cr.datasets.simulate_log(n_items=60, n_users=3000, n_rows=60_000, text_confounding=0.0,
                                   popularity_skew=0.6, seed=seed)
    est = cr.ItemEffectEstimator(nuisance=nuisance, seed=seed).fit(
        cr.InteractionLog(sim.data, **numeric_roles(sim)))
    d, rt = sim.data, sim.row_truth
    t, y, e = d["recommended"].to_numpy(), d["clicked"].to_numpy(), rt["propensity"].to_numpy()
    psi = rt["mu1"] - rt["mu0"] + t * (y - rt["mu1"]) / e - (1 - t) * (y - rt["mu0"]) / (1 - e)
    oracle = psi.groupby(d["item_id"].to_numpy()).mean().rename("oracle").rename_axis("item")
    out = est.effects_.merge(sim.truth[["item", "true_ate"]], on="item")
    return out.merge(oracle.reset_index(), on="item")


@pytest.fixture(scope="module")
def replications():
    return pd.concat([_replicate(seed) for seed in range(8)], ignore_index=True)


def test_rmse_close_to_oracle_aipw_and_far_better_than_naive(replications):
    ok = replications[replications["status"] == "ok"]
    assert len(ok) > 0.9 * len(replications)
    rmse = np.sqrt(((ok["ate"] - ok["true_ate"]) ** 2).mean())
    oracle = np.sqrt(((ok["oracle"] - ok["true_ate"]) ** 2).mean())
    naive = np.sqrt(((ok["naive_ate"] - ok["true_ate"]) ** 2).mean())
    assert rmse <= 1.3 * oracle
    assert naive >= 1.7 * rmse


def test_interval_coverage_over_replications(replications):
    ok = replications[replications["status"] == "ok"]
    covered = (ok["ci_low"] <= ok["true_ate"]) & (ok["true_ate"] <= ok["ci_high"])
    # ~480 intervals: binomial sd of the coverage is ~0.01, [0.92, 0.98] is about 3 sd wide
    assert 0.92 <= covered.mean() <= 0.98


def test_agrees_with_econml_linear_dr_learner():
    from econml.dr import LinearDRLearner
    from sklearn.linear_model import LinearRegression
    sim = cr.datasets.simulate_log(n_items=20, n_rows=40_000, outcome="continuous",
                                   text_confounding=0.0, popularity_skew=0.5, seed=5)
    roles = numeric_roles(sim)
    log = cr.InteractionLog(sim.data, **roles)
    ours = cr.ItemEffectEstimator(nuisance="per_item", outcome_model="linear",
                                  dtype="float64").fit(log).effects_.set_index("item")
    X = build_design(log, dtype=np.float64).X
    big = ours[ours["status"] == "ok"].nlargest(5, "n").index
    for k in big:
        rows = (sim.data["item_id"] == k).to_numpy()
        learner = LinearDRLearner(model_propensity=LogisticRegression(C=1.0),
                                  model_regression=LinearRegression(), cv=2, random_state=0)
        learner.fit(sim.data["watch_minutes"].to_numpy()[rows],
                    sim.data["recommended"].to_numpy()[rows], X=None, W=X[rows])
        theirs = float(np.ravel(learner.ate())[0])
        # same estimand, same data, different folds: differences are a fraction of the se
        assert abs(theirs - ours.loc[k, "ate"]) < 1.0 * ours.loc[k, "se"]


@pytest.fixture(scope="module")
def continuous_sim():
    return cr.datasets.simulate_log(n_items=40, n_rows=20_000, outcome="continuous",
                                    popularity_skew=0.5, text_confounding=0.0, seed=11)


def _fit(df, sim, **opts):
    roles = numeric_roles(sim)
    opts.setdefault("dtype", "float64")
    return cr.estimate_item_effects(df, **roles, **opts).set_index("item")


def test_invariant_to_row_order(continuous_sim):
    df = continuous_sim.data
    base = _fit(df, continuous_sim)
    shuffled = _fit(df.sample(frac=1.0, random_state=1), continuous_sim)
    pd.testing.assert_frame_equal(base, shuffled.loc[base.index], rtol=1e-7, atol=1e-9)


def test_outcome_shift_and_scale(continuous_sim):
    df = continuous_sim.data
    base = _fit(df, continuous_sim)
    shifted = _fit(df.assign(watch_minutes=df["watch_minutes"] + 100.0), continuous_sim)
    scaled = _fit(df.assign(watch_minutes=df["watch_minutes"] * 3.0), continuous_sim)
    ok = base["status"] == "ok"
    np.testing.assert_allclose(shifted["ate"][ok], base["ate"][ok], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(shifted["se"][ok], base["se"][ok], rtol=1e-6)
    np.testing.assert_allclose(scaled["ate"][ok], 3 * base["ate"][ok], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(scaled["se"][ok], 3 * base["se"][ok], rtol=1e-6)


@pytest.mark.parametrize("method", ["aipw", "ipw", "or"])
def test_flipping_treatment_negates_the_effect(continuous_sim, method):
    df = continuous_sim.data
    base = _fit(df, continuous_sim, method=method)
    flipped = _fit(df.assign(recommended=1 - df["recommended"]), continuous_sim, method=method)
    ok = base["status"] == "ok"
    np.testing.assert_allclose(flipped["ate"][ok], -base["ate"][ok], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(flipped["se"][ok], base["se"][ok], rtol=1e-6)


def test_float32_matches_float64():
    sim = cr.datasets.simulate_log(n_items=40, n_rows=30_000, popularity_skew=0.5, seed=2)
    e64 = _fit(sim.data, sim, dtype="float64")
    e32 = _fit(sim.data, sim, dtype="float32")
    ok = e64["status"] == "ok"
    assert ((e32["ate"] - e64["ate"]).abs()[ok] < 0.01 * e64["se"][ok]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    sim = cr.datasets.simulate_log(n_items=40, n_rows=30_000, popularity_skew=0.5, seed=2)
    cpu = _fit(sim.data, sim, device="cpu")
    gpu = _fit(sim.data, sim, device="cuda")
    ok = cpu["status"] == "ok"
    np.testing.assert_allclose(gpu["ate"][ok], cpu["ate"][ok], atol=1e-4)


def test_chunking_does_not_change_results(monkeypatch):
    sim = cr.datasets.simulate_log(n_items=30, n_rows=8_000, seed=4)
    base = _fit(sim.data, sim)
    monkeypatch.setattr(glm_layout, "CHUNK_BYTES", 50_000)
    chunked = _fit(sim.data, sim)
    pd.testing.assert_frame_equal(base, chunked, rtol=1e-9, atol=1e-12)


def test_logged_propensity_is_used():
    sim = cr.datasets.simulate_log(n_items=20, n_rows=10_000, popularity_skew=0.5, seed=6)
    roles = numeric_roles(sim)
    est = cr.ItemEffectEstimator(method="ipw", clip=0.0).fit(
        cr.InteractionLog(sim.data, **roles, propensity="propensity"))
    fitted = est.propensity_.notna()
    np.testing.assert_allclose(est.propensity_[fitted], sim.data["propensity"][fitted], rtol=1e-6)


def test_segments_by_group_and_summary():
    sim = cr.datasets.simulate_log(n_items=15, n_rows=15_000, popularity_skew=0.5, seed=7)
    roles = numeric_roles(sim)
    eff = cr.estimate_item_effects(sim.data, **roles, by="user_group")
    assert list(eff.columns[:3]) == ["item", "user_group", "ate"]
    assert len(eff) == sim.data.groupby(["item_id", "user_group"]).ngroups
    # the keys given as one list (as InteractionLog takes them) are the same segments
    listed = cr.estimate_item_effects(sim.data, **{**roles, "item": ["item_id", "user_group"]})
    pd.testing.assert_frame_equal(listed, eff)
    est = cr.ItemEffectEstimator().fit(cr.InteractionLog(sim.data, **roles))
    text = str(est.summary())
    assert "AIPW" in text and "Items estimated (ok)" in text
    low, high = est.effect_interval(alpha=0.1)  # arrays in effects_ order
    ok = (est.effects_["status"] == "ok").to_numpy()
    assert ((high - low) < (est.effects_["ci_high"] - est.effects_["ci_low"]).to_numpy())[ok].all()


# ---------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def small():
    sim = cr.datasets.simulate_log(n_items=8, n_rows=3_000, popularity_skew=0.3, seed=9)
    return sim.data, numeric_roles(sim)


@pytest.mark.parametrize("mutate, column", [
    (lambda d: d.drop(columns="hour"), "hour"),
    (lambda d: d.assign(hour=d["hour"].astype(str)), "hour"),
    (lambda d: d.assign(hour=np.where(np.arange(len(d)) == 3, np.nan, d["hour"])), "hour"),
    (lambda d: d.assign(tenure=np.where(np.arange(len(d)) == 3, np.inf, d["tenure"])), "tenure"),
    (lambda d: d.assign(clicked=np.where(np.arange(len(d)) == 3, np.nan, d["clicked"])), "clicked"),
    (lambda d: d.assign(recommended=d["recommended"] * 2), "recommended"),
    (lambda d: d.assign(recommended=d["recommended"].map({0: "no", 1: "yes"})), "recommended"),
])
def test_bad_columns_raise_schema_error(small, mutate, column):
    df, roles = small
    with pytest.raises(SchemaError) as info:
        cr.estimate_item_effects(mutate(df), **roles)
    assert info.value.column == column
    assert column in str(info.value)


def test_empty_frame_and_duplicate_roles(small):
    df, roles = small
    with pytest.raises(SchemaError, match="empty"):
        cr.estimate_item_effects(df.iloc[:0], **roles)
    with pytest.raises(SchemaError, match="two roles"):
        cr.estimate_item_effects(df, **{**roles, "confounders": ["hour", "clicked"]})


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1])
def test_logged_propensity_outside_unit_interval(small, bad):
    df, roles = small
    df = df.assign(propensity=np.where(np.arange(len(df)) == 0, bad, df["propensity"]))
    with pytest.raises(SchemaError, match=r"outside \(0, 1\]"):
        cr.estimate_item_effects(df, **roles, propensity="propensity")


def test_items_without_an_arm_get_a_status_not_a_crash(small):
    df, roles = small
    items = sorted(df["item_id"].unique())
    df = df[~((df["item_id"] == items[0]) & (df["recommended"] == 1))]
    df = df[~((df["item_id"] == items[1]) & (df["recommended"] == 0))]
    df = df[~((df["item_id"] == items[2]) & (df["recommended"] == 1))
            | (df.groupby(["item_id", "recommended"]).cumcount() < 2)]
    eff = cr.estimate_item_effects(df, **roles).set_index("item")
    assert eff.loc[items[0], "status"] == "no_treated"
    assert eff.loc[items[1], "status"] == "no_control"
    assert eff.loc[items[2], "status"] == "too_few_rows"
    assert eff.loc[items[:3], "ate"].isna().all()
    assert (eff.loc[items[3:], "status"] != "no_treated").all()
    assert eff.loc[items[3:], "ate"].notna().all()


def test_bad_options(small):
    df, roles = small
    for bad in [dict(method="dml"), dict(nuisance="forest"), dict(n_folds=0), dict(clip=0.7),
                dict(trim=0.0), dict(shrinkage=-1.0), dict(dtype="float16"), dict(outcome_model="probit"),
                dict(balance_penalty=0.0), dict(balance_penalty="big")]:
        with pytest.raises(ValueError):
            cr.estimate_item_effects(df, **roles, **bad)


def test_result_accessors_and_refitting_with_the_same_folds(small):
    df, roles = small
    log = cr.InteractionLog(df, **roles)
    # one split: a refit with the same folds then has every split's folds (repeats beyond
    # the first draw their own from the seed)
    est = cr.ItemEffectEstimator(dtype="float64", n_repeats=1).fit(log)
    eff = est.effects_.set_index("item")
    pd.testing.assert_series_equal(est.effect(), eff["ate"])
    frame = est.summary_frame(alpha=0.2).set_index("item")
    ok = eff["status"] == "ok"
    assert (frame["ci_high"] - frame["ci_low"])[ok].lt((eff["ci_high"] - eff["ci_low"])[ok]).all()
    assert est.psi_.groupby(df["item_id"]).mean()[ok].sub(eff["ate"][ok]).abs().max() < 1e-12
    again = cr.ItemEffectEstimator(dtype="float64", seed=123, n_repeats=1).fit(
        log, folds=est.fold_.to_numpy())
    pd.testing.assert_frame_equal(again.effects_, est.effects_)
    with pytest.raises(ValueError, match="folds"):
        cr.ItemEffectEstimator().fit(log, folds=np.full(len(df), 5))
    with pytest.raises(RuntimeError, match="not fitted"):
        cr.ItemEffectEstimator().effect()


def test_repeated_splits_average_out_of_fold_predictions(small):
    df, roles = small
    log = cr.InteractionLog(df, **roles)
    # split r of seed 0 draws its folds as a single fit seeded split_seed(0, r) does
    # every split cross-fitted (this small log would otherwise take the all-rows refit)
    fit = lambda **kw: cr.ItemEffectEstimator(dtype="float64", refit_small_logs=False, **kw).fit(log)
    fits = [fit(seed=split_seed(0, r), n_repeats=1) for r in (0, 1)]
    both = fit(seed=0, n_repeats=2)
    for name in ("mu0_", "mu1_"):
        expected = (getattr(fits[0], name) + getattr(fits[1], name)) / 2
        pd.testing.assert_series_equal(getattr(both, name), expected, rtol=1e-10)
    assert len(both.nuisance_fits_) == 2 * both.n_folds
    with pytest.raises(ValueError, match="n_repeats"):
        cr.ItemEffectEstimator(n_repeats=0).fit(log)


def test_normalised_and_textbook_aipw_from_their_formulas(small):
    """normalize=True: mean(mu1 - mu0) plus each arm's weighted-mean residual within each
    (item, fold), the folds averaged with their row shares (an arm with < 2 rows in a fold
    of the item: over the item); False: the plain average of the AIPW scores. The
    normalised variance (binary clicks) is the moderated one: (PRIOR_DOF v_model + d v_hc3)
    / (PRIOR_DOF + d), v_model implied by the fitted click probabilities with the estimate's
    own row weights, v_hc3 from the HC3 influence values, d = 2 (n^2 v_model)^2 / sum
    omega^4 p (1 - p) (1 - 2p)^2; t on PRIOR_DOF + d degrees of freedom."""
    df, roles = small
    log = cr.InteractionLog(df, **roles)
    folds = cr.ItemEffectEstimator().fit(log).fold_.to_numpy()
    # the formulas of cross-fitted predictions (this log is small enough for the all-rows
    # refit, whose estimate and variance come from different fits: tests/estimate/test_small_items.py)
    fits = {flag: cr.ItemEffectEstimator(dtype="float64", normalize=flag, n_repeats=1,
                                         refit_small_logs=False).fit(log, folds=folds)
            for flag in (True, False)}
    est = fits[True]
    rows = est.propensity_.notna()
    d = pd.DataFrame({"item": df["item_id"], "fold": folds, "t": df[roles["treatment"]],
                      "y": df[roles["outcome"]], "e": est.propensity_,
                      "mu0": est.mu0_, "mu1": est.mu1_})[rows]
    d["wt"], d["wc"] = d.t / d.e, (1 - d.t) / (1 - d.e)

    def arm_weights(x, w):  # each row's weight in its arm's mean, times the item's rows
        fold_rows = x.groupby("fold")[w].apply(lambda v: (v > 0).sum())
        if fold_rows.min() < 2:
            return len(x) * x[w] / x[w].sum()
        return x.groupby("fold")[w].transform(lambda v: len(v) * v / v.sum())

    def arm_mean(x, w, mu):  # one item's residual mean of one arm
        return (arm_weights(x, w) * (x.y - x[mu])).mean()

    g = d.groupby("item")
    normalised = g.apply(lambda x: (x.mu1 - x.mu0).mean() + arm_mean(x, "wt", "mu1")
                         - arm_mean(x, "wc", "mu0"))
    plain = g.apply(lambda x: (x.mu1 - x.mu0 + x.wt * (x.y - x.mu1) - x.wc * (x.y - x.mu0)).mean())
    for flag, expected in ((True, normalised), (False, plain)):
        eff = fits[flag].effects_.set_index("item")
        ok = eff.index[eff["status"] == "ok"]
        np.testing.assert_allclose(eff.loc[ok, "ate"], expected.loc[ok], rtol=1e-10, atol=1e-12)
    assert set(df[roles["outcome"]].unique()) <= {0, 1}

    def hc3_term(x, w, mu):  # one arm's term: group mean residual + residual / (1 - leverage)
        omega = arm_weights(x, w)
        fold_rows = x.groupby("fold")[w].apply(lambda v: (v > 0).sum())
        group = x.fold if fold_rows.min() >= 2 else pd.Series(0, index=x.index)
        r = (x[w] * (x.y - x[mu])).groupby(group).transform("sum") / x[w].groupby(group).transform("sum")
        h = x[w] / x[w].groupby(group).transform("sum")
        return r + np.where(x[w] > 0, omega * (x.y - x[mu] - r) / (1 - h), 0.0)

    def moderated(x):
        ate, p1, p0 = normalised[x.name], x.mu1, x.mu0
        om_t, om_c = arm_weights(x, "wt"), arm_weights(x, "wc")
        spread = ((p1 - p0 - ate) ** 2 + om_t ** 2 * p1 * (1 - p1) + om_c ** 2 * p0 * (1 - p0))
        v_model = spread.sum() / len(x) ** 2
        psi = p1 - p0 + hc3_term(x, "wt", "mu1") - hc3_term(x, "wc", "mu0")
        v_hc3 = psi.var(ddof=1) / len(x)
        dof = 2 * spread.sum() ** 2 / (om_t ** 4 * p1 * (1 - p1) * (1 - 2 * p1) ** 2
                                     + om_c ** 4 * p0 * (1 - p0) * (1 - 2 * p0) ** 2).sum()
        return pd.Series({"var": (PRIOR_DOF * v_model + dof * v_hc3) / (PRIOR_DOF + dof),
                          "dof": PRIOR_DOF + dof,
                          "v_model": v_model, "v_hc3": v_hc3})

    eff = est.effects_.set_index("item")
    # items whose arms all have clicks and non-clicks (the others take the null-rate floor)
    clicks = d.groupby(["item", "t"]).y.agg(["sum", "count"]).unstack("t")
    full = ((clicks["sum"] > 0) & (clicks["sum"] < clicks["count"])).all(axis=1)
    ok = eff.index[(eff["status"] == "ok") & full.reindex(eff.index, fill_value=False)]
    assert len(ok) >= 5
    expected = g.apply(moderated).loc[ok]
    np.testing.assert_allclose(eff.loc[ok, "se"] ** 2, expected["var"], rtol=1e-8)
    np.testing.assert_allclose(eff.loc[ok, "dof"], expected["dof"], rtol=1e-8)
    # the two variances differ, so the weights are tested (neither one alone passes)
    assert not np.allclose(expected["v_model"], expected["v_hc3"], rtol=0.05)
    assert "normalised" in str(est.summary())
    with pytest.raises(ValueError, match="normalize"):
        cr.ItemEffectEstimator(normalize="yes").fit(log)


def test_a_fit_stopping_at_max_iter_warns_and_is_flagged():
    sim = cr.datasets.simulate_log(n_items=12, n_rows=6_000, seed=3)
    log = cr.InteractionLog(sim.data, **numeric_roles(sim))
    with pytest.warns(cr.ConvergenceWarning, match=r"propensity model: \d+ item\(s\) stopped at max_iter") as seen:
        est = cr.ItemEffectEstimator(max_iter=1).fit(log)
    names = [str(w.message) for w in seen if issubclass(w.category, cr.ConvergenceWarning)]
    assert any("outcome (treated) model" in m for m in names)
    first_item = str(est.effects_.loc[~est.effects_["converged"], "item"].iloc[0])
    assert any(first_item in m for m in names)  # the warning names the items
    assert not est.converged_ and (~est.effects_["converged"]).sum() > 0
    assert "Items not converged (max_iter)" in str(est.summary())
    assert issubclass(cr.ConvergenceWarning, UserWarning)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", cr.ConvergenceWarning)
        full = cr.ItemEffectEstimator().fit(log)  # the default converges: no warning
    assert full.converged_ and full.effects_["converged"].all()


def test_nuisance_quality_sees_confounding_and_its_absence():
    """Improvement over the out-of-fold item means: clearly positive where activity drives
    exposure and clicks (pseudo-R^2 ~0.07-0.10 on this log), near 0 where nothing does (the
    loss ratio of 13-19k rows moves by ~1e-2 from fitting noise alone)."""
    from causalrec.estimate.diagnostics import _out_of_fold_item_mean
    quality = {}
    for strength in (1.0, 0.0):
        sim = cr.datasets.simulate_log(n_items=50, n_rows=20_000, numeric_confounding=strength,
                                       text_confounding=0.0, seed=1)
        log = cr.InteractionLog(sim.data, **numeric_roles(sim))
        est = cr.ItemEffectEstimator(seed=0).fit(log)
        quality[strength] = est.nuisance_quality().set_index("model")
    confounded, plain = quality[1.0], quality[0.0]
    assert list(confounded.index) == ["propensity", "outcome, not recommended",
                                      "outcome, recommended"]
    assert (confounded["improvement"] > 0.04).all()
    assert (plain["improvement"].abs() < 0.03).all()
    assert plain.loc["propensity", "rows"] == est.propensity_.notna().sum()  # est: the last fit
    # the baseline: each row's item mean over the other fold's rows
    item = np.array([0, 0, 0, 1, 1, 1, 2])
    target = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    folds = np.array([0, 1, 1, 0, 1, 0, 0])
    expected = [0.5, 1.0, 1.0, 0.0, 0.5, 0.0, 1 / 3]  # item 2 has no fold-1 rows
    np.testing.assert_allclose(_out_of_fold_item_mean(target, item, folds), expected)


def test_nuisance_quality_skips_a_logged_propensity(small):
    df, roles = small
    est = cr.ItemEffectEstimator(seed=0).fit(cr.InteractionLog(df, **roles,
                                                               propensity="propensity"))
    assert "propensity" not in set(est.nuisance_quality()["model"])
