"""Per-user effects (causalrec.uplift): recovery of known per-row effects, policy values,
coverage, agreement with EconML's LinearDRLearner, heterogeneity tests, bad inputs."""
import numpy as np
import pandas as pd
import pytest
import torch

import causalrec as cr
from causalrec.uplift.score import chunked_top_k

FEATURES = ["user_activity", "hour", "tenure"]
ROLES = dict(item="item_id", treatment="recommended", confounders=FEATURES,
             categorical=["device"], user="user_id")


def _simulate(seed, n_items=60, n_rows=30_000, heterogeneity=1.5, outcome="binary"):
    return cr.datasets.simulate_log(n_items=n_items, n_users=1500, n_rows=n_rows,
                                    effect_heterogeneity=heterogeneity, text_confounding=0.0,
                                    outcome=outcome, seed=seed)


def _log(frame, outcome="clicked"):
    return cr.InteractionLog(frame, outcome=outcome, **ROLES)


def _fit(frame, outcome="clicked", **options):
    options = dict(dict(seed=0, device="cpu"), **options)
    return cr.UpliftModel(features=FEATURES, categorical=["device"], **options).fit(
        _log(frame, outcome))


@pytest.fixture(scope="module")
def split():
    sim = _simulate(1, n_items=100, n_rows=40_000)
    cut = 30_000
    model = _fit(sim.data.iloc[:cut])
    return sim, cut, model


def _recovery(sim, cut, model):
    """Pearson and RMSE against the true per-row effects on the held-out rows, CATE vs ATE."""
    test = sim.data.iloc[cut:]
    true = sim.row_truth["effect"].to_numpy()[cut:]
    tau = model.effect(test).to_numpy()
    ate = model.heterogeneity_.set_index("item")["estimator_ate"].reindex(test["item_id"]).to_numpy()
    ok = np.isfinite(tau) & np.isfinite(ate)
    assert ok.mean() > 0.8  # rows of items too small for stage 1 get NaN
    pearson = {name: np.corrcoef(v[ok], true[ok])[0, 1] for name, v in (("cate", tau), ("ate", ate))}
    rmse = {name: np.sqrt(np.mean((v[ok] - true[ok]) ** 2)) for name, v in (("cate", tau), ("ate", ate))}
    return pearson, rmse


def test_cate_recovers_per_row_effects_better_than_ate(split):
    # measured (seeds 1, 2, 3): Pearson CATE - ATE 0.094, 0.195, 0.245 (seed 4: 0.399);
    # RMSE ratio CATE / ATE 0.785, 0.717, 0.700. So: CATE better on every seed, by 0.1 on
    # average over the three, and RMSE at most 0.9 of the ATE's on each.
    sim, cut, model = split
    margins = []
    for seed in (1, 2, 3):
        if seed != 1:
            sim = _simulate(seed, n_items=100, n_rows=40_000)
            model = _fit(sim.data.iloc[:cut])
        pearson, rmse = _recovery(sim, cut, model)
        print(f"seed {seed}: Pearson CATE {pearson['cate']:.3f} vs ATE {pearson['ate']:.3f}; "
              f"RMSE CATE {rmse['cate']:.4f} vs ATE {rmse['ate']:.4f}")
        assert pearson["cate"] > pearson["ate"]
        assert rmse["cate"] < 0.9 * rmse["ate"]
        margins.append(pearson["cate"] - pearson["ate"])
        # the chosen shrinkage is never worse than the per-item ATE on the held-out DR loss
        cv = model.cv_results_
        ate_only = cv[(cv["mean"] == 0) & np.isinf(cv["local"]) & np.isinf(cv["shared"])]
        assert cv.loc[cv["chosen"], "heldout_loss"].item() <= ate_only["heldout_loss"].item()
    assert np.mean(margins) > 0.1


def test_outputs_are_consistent(split):
    sim, cut, model = split
    users = sim.data.iloc[cut:cut + 50]
    matrix = model.effect_matrix(users)
    assert matrix.shape == (50, len(model.items_))
    rows = users.assign(item_id=model.items_[3])
    np.testing.assert_allclose(model.effect(rows).to_numpy(), matrix.iloc[:, 3].to_numpy(), rtol=1e-10)
    interval = model.effect_interval(rows)
    tau = model.effect(rows)
    assert ((interval["ci_low"] <= tau) & (tau <= interval["ci_high"])).all()
    recs = model.recommend(users, k=5)
    assert list(recs.columns) == ["user", "rank", "item", "uplift", "ci_low", "ci_high"]
    best = matrix.apply(lambda r: r.nlargest(5).to_numpy(), axis=1, result_type="expand")
    np.testing.assert_allclose(recs["uplift"].to_numpy().reshape(50, 5), best.to_numpy(), rtol=1e-10)
    coef = model.coef_
    # "mobile", the most frequent device, is the reference level
    assert set(coef["term"]) == {"mean", *FEATURES, "device=desktop", "device=tablet"}
    assert (coef["se"].dropna() > 0).all()
    assert "driver" in model.summary().table.columns


def test_chunked_top_k_equals_dense():
    gen = torch.Generator().manual_seed(0)
    X, W = torch.randn(300, 5, generator=gen), torch.randn(1000, 5, generator=gen)
    W[7] = float("nan")  # an item without a model never wins
    values, index = chunked_top_k(X, W, 10, budget=4096)  # many user and item chunks
    dense = torch.nan_to_num(X @ W.T, nan=float("-inf")).topk(10, dim=1)
    torch.testing.assert_close(values, dense.values)
    torch.testing.assert_close(index, dense.indices)


def test_response_learns_the_outcome_under_recommendation_per_user(split):
    # the click baseline's model, fitted on the training rows only. Measured (seeds 1, 2, 3):
    # RMSE against the true mu1 of the held-out rows 0.092 / 0.087 / 0.091, against 0.154 /
    # 0.138 / 0.128 for the per-item mean of the *true* mu1 (an oracle without user features)
    sim, cut, model = split
    test = sim.data.iloc[cut:]
    mu1 = sim.row_truth["mu1"].to_numpy()
    response = model.response(test).to_numpy()
    item_mean = pd.Series(mu1[:cut]).groupby(sim.data["item_id"].to_numpy()[:cut]).mean()
    oracle = item_mean.reindex(test["item_id"]).to_numpy()
    ok = np.isfinite(response) & np.isfinite(oracle)
    assert ok.mean() > 0.8  # rows of items too small for stage 1 get NaN
    rmse = {name: np.sqrt(np.mean((v[ok] - mu1[cut:][ok]) ** 2))
            for name, v in (("response", response), ("item_mean", oracle))}
    assert rmse["response"] < rmse["item_mean"]
    cv = model.response_cv_results_
    no_features = cv[(cv["mean"] == 0) & np.isinf(cv["local"]) & np.isinf(cv["shared"])]
    assert cv.loc[cv["chosen"], "heldout_loss"].item() <= no_features["heldout_loss"].item()


def test_uplift_policy_beats_click_and_ate_policies():
    # every policy ranks by what its training rows taught it (the click baseline by the
    # model's response, not by the evaluation fit's mu1 of the evaluated rows). Measured true
    # incremental clicks per row, seeds 0-3: uplift .0256 .0232 .0259 .0445 (mean .0298),
    # click .0244 .0219 .0246 .0407 (.0279), ate .0232 .0219 .0207 .0380 (.0260)
    true = []
    for seed in range(4):
        sim = _simulate(seed)
        cut = 20_000
        model = _fit(sim.data.iloc[:cut])
        ev = cr.evaluate_policy(_log(sim.data.iloc[cut:]), policy=model, k=3,
                                baselines=("click", "ate", "logging"),
                                truth=sim.row_truth.iloc[cut:])
        true.append(ev.values.set_index("policy")["true_incremental"])
    mean = pd.concat(true, axis=1).mean(1)
    print("true incremental clicks per row:", mean.round(4).to_dict())
    assert mean["uplift"] > mean["click"] and mean["uplift"] > mean["ate"]
    assert mean["uplift"] > mean["logging"]
    assert set(ev.curve["policy"]) == {"uplift", "click", "ate"}
    assert ev.curve.groupby("policy")["gain"].first().eq(0).all()
    assert "Per-user policies" in ev.to_html()


def test_dr_policy_value_covers_the_truth():
    # 60 replications: the coverage's binomial sd at 0.95 is 0.028, so 0.85 is > 3 sd below.
    # One split and no heterogeneity bootstrap (the policy value's interval needs neither):
    # 0.983 coverage either way, widths 0.100 against 0.091 with the default splits, 0.57x
    # the time
    covered = []
    for seed in range(60):
        sim = _simulate(100 + seed, n_items=20, n_rows=6000)
        cut = 3000
        model = _fit(sim.data.iloc[:cut], shrinkage=(100.0, 1000.0, 1000.0), n_folds=2,
                     n_repeats=1, n_bootstrap=0)
        ev = cr.evaluate_policy(_log(sim.data.iloc[cut:]), policy=model, k=2, baselines=(),
                                truth=sim.row_truth.iloc[cut:])
        row = ev.values.iloc[0]
        covered.append(row["ci_low"] <= row["true_value"] <= row["ci_high"])
    coverage = np.mean(covered)
    print(f"DR policy-value coverage {coverage:.3f} over {len(covered)} seeds")
    assert 0.85 <= coverage <= 1.0


def test_policy_evaluation_does_not_depend_on_row_order_or_index():
    """Shuffling the held-out rows and relabelling their index leaves every number the same
    (summation order only: 1e-12 relative). The log has many ties: 10 items over 300 users'
    4,000 rows, so users see an item in several rows, which the "ate" policy scores alike
    (and the uplift policy too where the features repeat); top-k and the curve once broke
    them by row order (values moved 0.2 SE, the curve's gain 0.006). float64, as float32
    nuisance fits of the held-out log round their sums differently in another order (1e-6)."""
    from causalrec.uplift.policy import _top_k_per_user
    train, held = (cr.datasets.simulate_log(n_items=10, n_users=300, n_rows=4000,
                                            text_confounding=0.0, effect_heterogeneity=1.5,
                                            seed=seed) for seed in (11, 12))
    model = _fit(train.data, n_folds=2, n_repeats=1, n_bootstrap=0, dtype="float64")
    order = np.random.default_rng(0).permutation(len(held.data))
    index = pd.Index([f"row{i}" for i in range(len(order))])
    frames = [(held.data, held.row_truth),
              tuple(f.iloc[order].set_axis(index) for f in (held.data, held.row_truth))]
    a, b = (cr.evaluate_policy(_log(data), policy=model, k=2, truth=truth) for data, truth in frames)
    for x, y in ((a.values, b.values), (a.differences, b.differences), (a.curve, b.curve)):
        pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-12, atol=0)
    assert (a.k, a.n_rows, a.n_excluded) == (b.k, b.n_rows, b.n_excluded)
    # the ties are there: users whose k-th slot the "ate" policy shares among tied rows
    ate = model.heterogeneity_.set_index("item")["estimator_ate"]
    weights = _top_k_per_user(pd.factorize(held.data["user_id"])[0],
                              ate.reindex(held.data["item_id"]).to_numpy(), 2)
    assert ((weights > 0) & (weights < 1)).sum() > 100


def test_ties_at_the_boundary_share_the_slots_left():
    """Rows tied across a user's k-th slot share the slots left equally (the policy drawing
    them at random), NaN scores tie last; a curve's cut inside a tie counts it in proportion;
    without ties the weights are 0/1."""
    from causalrec.uplift.policy import _curve, _top_k_per_user, _values
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    score = np.array([3.0, 2.0, 2.0, 1.0, 5.0, 5.0, np.nan, 1.0, np.nan])
    pi = _top_k_per_user(users, score, 2)
    np.testing.assert_array_equal(pi, [1, 0.5, 0.5, 0, 1, 1, 0.5, 1, 0.5])
    np.testing.assert_array_equal(_top_k_per_user(users, np.arange(9.0), 1),
                                  [0, 0, 0, 1, 0, 1, 0, 0, 1])
    g1, g0 = np.arange(9.0), np.zeros(9)  # DR effects 0..8
    row = _values("p", pi, g1, g0, users, 1.96, None)
    assert row["n_recommended"] == 6
    assert row["value"] == pytest.approx((0 + 0.5 + 1 + 4 + 5 + 3 + 7 + 4) / 9)
    # causal precision: per user the weighted mean effect of its recommendations, averaged
    assert row["causal_precision"] == pytest.approx(np.mean([(0 + 0.5 + 1) / 2, 4.5, (3 + 7 + 4) / 2]))
    curve = _curve("p", np.array([2.0, 1.0, 1.0, 0.0]), np.array([4.0, 1.0, 3.0, 0.0]), 5, None)
    np.testing.assert_allclose(curve["gain"], np.array([0, 4, 4 + 0.5 * (1 + 3), 8, 8]) / 4)


class _ArmRegression:
    """E[Y | X, W, T] for EconML: a linear regression per arm (T is the last column)."""

    def fit(self, XT, y, **_):
        from sklearn.linear_model import LinearRegression
        t = XT[:, -1]
        self.models_ = {a: LinearRegression().fit(XT[t == a, :-1], y[t == a]) for a in (0, 1)}
        return self

    def predict(self, XT):
        t = XT[:, -1]
        out = np.empty(len(XT))
        for a, m in self.models_.items():
            if (t == a).any():
                out[t == a] = m.predict(XT[t == a, :-1])
        return out

    def get_params(self, deep=True):
        return {}

    def set_params(self, **_):
        return self


def test_agrees_with_econml_linear_dr_learner():
    from econml.dr import LinearDRLearner
    from sklearn.linear_model import LogisticRegression

    sim = _simulate(7, n_items=30, n_rows=30_000, outcome="continuous")
    df = sim.data
    model = cr.UpliftModel(features=FEATURES, shrinkage=(0.0, 0.0, float("inf")),
                           nuisance="per_item", outcome_model="linear", penalty=1e-6,
                           dtype="float64", seed=0, device="cpu").fit(
        cr.InteractionLog(df, item="item_id", treatment="recommended", outcome="watch_minutes",
                          confounders=FEATURES))
    big = df["item_id"].value_counts().index[:3]
    coef = model.coef_.set_index(["item", "term"])
    for item in big:
        rows = df[df["item_id"] == item]
        X = rows[FEATURES].to_numpy(float)
        dr = LinearDRLearner(model_propensity=LogisticRegression(C=1e6, max_iter=1000),
                             model_regression=_ArmRegression(), cv=2, random_state=0)
        dr.fit(rows["watch_minutes"].to_numpy(), rows["recommended"].to_numpy(), X=X)
        # our slopes are per standard deviation of the fitting log's columns
        ours = coef.loc[[(item, f) for f in FEATURES], ["coef", "se"]].to_numpy()
        sd = 1.0 / model.encoder_.scale_
        theirs = np.ravel(dr.coef_(T=1)) * sd
        np.testing.assert_array_less(np.abs(ours[:, 0] - theirs), 2.0 * ours[:, 1])
        ate, se = coef.loc[(item, "mean"), ["coef", "se"]]
        assert abs(ate - dr.ate(X=X)) < 2.0 * se


def test_per_item_independence():
    sim = _simulate(3, n_items=30, n_rows=15_000)
    df = sim.data
    options = dict(shrinkage=(0.0, 0.0, float("inf")), nuisance="per_item", penalty=1e-8,
                   dtype="float64", n_folds=2)
    full = _fit(df, **options)
    kept = df[df["item_id"] < 15]  # item codes, hence folds, of the first items unchanged
    part = _fit(kept, **options)
    rows = df[df["item_id"].isin([0, 1, 2])]
    # equal up to the nuisance fits' Newton tolerance (1e-6 on the coefficients); the
    # effects are ~1e-2, so an item that borrowed from the others would differ by far more
    np.testing.assert_allclose(part.effect(rows).to_numpy(), full.effect(rows).to_numpy(),
                               rtol=0, atol=2e-6)


def test_heterogeneity_tests_hold_level_without_heterogeneity():
    # bootstrap-Bartlett-corrected Wald test: measured 0.034 over 1062 null items (seeds
    # 0-23; the F-referenced HC3 test rejected 0.109 there)
    p_values, rejections = [], 0
    for seed in range(4):
        sim = _simulate(20 + seed, n_items=60, n_rows=20_000, heterogeneity=0.0,
                        outcome="continuous")
        model = _fit(sim.data, outcome="watch_minutes")
        het = model.heterogeneity_.dropna(subset=["p_value"])
        p_values.append(het["p_value"].to_numpy())
        rejections += int(het["heterogeneous"].sum())
    p = np.concatenate(p_values)
    # per-item tests: rate of p < 0.05 within 3 binomial sd of 0.05
    rate, sd = (p < 0.05).mean(), np.sqrt(0.05 * 0.95 / len(p))
    print(f"{len(p)} items: rejection rate at 0.05 {rate:.3f}; BH calls {rejections}")
    assert rate < 0.05 + 3 * sd
    # under the global null BH controls the chance of any call at 5% per simulation
    assert rejections <= 1


@pytest.mark.xfail(strict=False,
                   reason="issue 17: the level-holding bootstrap-Bartlett test has little power on this binary-outcome log: 2 of 12 items over 500 rows at p < 0.05, no BH call of 58 (continuous outcome, h = 1.5: 0.32 of items at p < 0.05, 0.86 with 100+ rows per arm)")
def test_heterogeneity_tests_have_power(split):
    _, _, model = split
    het = model.heterogeneity_.dropna(subset=["p_value"])
    big = het[het["n"] > 500]
    print(f"{len(big)} items with > 500 rows: share p < 0.05 {(big['p_value'] < 0.05).mean():.2f}, "
          f"BH calls {int(het['heterogeneous'].sum())} of {len(het)}")
    # every item's effect varies (h = 1.5), but pseudo-outcomes are noisy and the per-item
    # test has d = 5 degrees of freedom: power is modest. Under the null, 3 or more of 12
    # items at p < 0.05 has probability 0.02.
    assert (big["p_value"] < 0.05).sum() >= 3
    assert het["heterogeneous"].sum() >= 2


def test_bad_inputs(split):
    sim, cut, model = split
    users = sim.data.iloc[cut:cut + 5]
    with pytest.raises(cr.SchemaError, match="tenure"):
        model.effect_matrix(users.drop(columns="tenure"))
    with pytest.raises(cr.SchemaError, match="tenure"):
        model.recommend(users.drop(columns="tenure"))
    with pytest.raises(ValueError, match="unknown item"):
        model.effect(users.assign(item_id=10_000))
    with pytest.raises(ValueError, match="unknown item"):
        model.effect_matrix(users, items=[0, 10_000])
    with pytest.raises(cr.SchemaError, match="nope"):
        cr.UpliftModel(features=["nope"]).fit(_log(sim.data.iloc[:cut]))
    with pytest.raises(ValueError, match="shrinkage"):
        cr.UpliftModel(features=FEATURES, shrinkage=(1.0, 2.0)).fit(_log(sim.data.iloc[:cut]))
    with pytest.raises(ValueError, match="n_bootstrap"):
        cr.UpliftModel(features=FEATURES, n_bootstrap=5).fit(_log(sim.data.iloc[:cut]))
    with pytest.raises(ValueError, match="k must"):
        model.recommend(users, k=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        cr.UpliftModel(features=FEATURES).effect(users)


def test_heterogeneity_test_can_be_skipped(split):
    sim, cut, _ = split
    frame = sim.data.iloc[:8000]
    model = cr.UpliftModel(features=FEATURES, n_bootstrap=0, seed=0, device="cpu").fit(_log(frame))
    het = model.heterogeneity_
    assert het["p_value"].isna().all() and not het["heterogeneous"].any()
    assert np.isfinite(het["wald"]).any()  # the statistic itself is still reported


class _ShuffledBlocks:
    """A rows backend holding one block's rows as three shuffled blocks (as Spark partitions
    hold them): every sum of the second stage must not depend on the split or the order."""

    device = "cpu"

    def __init__(self, block, seed=0):
        from dataclasses import fields
        from causalrec.uplift.rows import Block
        order = np.random.default_rng(seed).permutation(len(block.g))
        self.blocks = [Block(*(getattr(block, f.name)[part] for f in fields(Block)))
                       for part in np.array_split(order, 3)]

    def reduce(self, fn):
        from causalrec.uplift.rows import sum_parts
        return sum_parts(tuple(fn(b)) for b in self.blocks)


def test_bootstrap_draws_do_not_depend_on_blocks_or_order():
    """The heterogeneity test on rows split into shuffled blocks equals the one-block test:
    the Poisson weights are drawn per (seed, row key, draw), so only summation order differs
    (1e-8 relative: ~7 orders above float64 rounding of these sums); the weights are Poisson(1)
    (mean and variance 1 within 5 standard errors of 40,000 draws: 0.025 and 0.05)."""
    from causalrec.uplift.bootstrap import poisson_weights, wald_bootstrap
    from causalrec.uplift.rows import Block
    rng = np.random.default_rng(4)
    n, K = 3000, 6
    Z = rng.normal(size=(n, 3))
    item = rng.integers(0, K, n)
    g = 0.3 * Z[:, 0] * (item == 0) + rng.standard_t(4, n)
    block = Block(Z, g, item, rng.integers(0, 2, n), np.arange(n, dtype=np.int64) * 7 + 3,
                  g1=g + rng.normal(size=n))
    from causalrec.uplift.rows import LocalUpliftRows
    one = LocalUpliftRows(None)
    one.block, one.device = block, "cpu"
    whole = wald_bootstrap(one, K, 19, 5, "cpu")
    split = wald_bootstrap(_ShuffledBlocks(block), K, 19, 5, "cpu")
    for a, b in zip(whole, split):
        np.testing.assert_allclose(a, b, rtol=1e-8)
    assert whole[2][0] < 0.01  # item 0 has a slope (z ~ 4.7)
    w = poisson_weights(5, np.arange(10_000), np.arange(4))
    np.testing.assert_array_equal(w[:, 5000:], poisson_weights(5, np.arange(5000, 10_000), np.arange(4)))
    assert abs(w.mean() - 1) < 0.025 and abs(w.var() - 1) < 0.05
