"""Factorised (low-rank item-slope) nuisance: bias removal under user x item topic confounding
in the long tail, coverage, no harm without the structure, determinism, bad parameters."""
import numpy as np
import pandas as pd
import pytest

from causalrec.datasets import simulate_log
from causalrec.datasets.simulate import TOPICS
from causalrec.estimate import ItemEffectEstimator, estimate_item_effects
from causalrec.nuisance import FactorisedLearner, FlexibleNuisance
from causalrec.nuisance.select import stack_weights
from causalrec.schema import InteractionLog

TOPIC_COLUMNS = [f"topic_{k}" for k in range(5)]


def _log(text_confounding, seed=7):
    """A heavy-tailed log (150 items, 50-2,500 rows) confounded through the user's topic.

    The topic enters as noisy one-hot columns instead of BERT -> PCA components of
    ``user_text``: the components carry the topic the same way (cluster positions in a few
    directions), and the stand-in keeps the test free of the text encoder's cost.
    """
    sim = simulate_log(n_items=150, n_rows=40_000, popularity_skew=0.8,
                       text_confounding=text_confounding, seed=seed)
    first = sim.data.user_text.str.removeprefix("Into ").str.split(",").str[0]
    topic = np.array([next(k for k, words in enumerate(TOPICS.values()) if w in words)
                      for w in first])
    noise = np.random.default_rng(seed).normal(0.0, 0.5, size=(len(topic), 5))
    data = sim.data.assign(**{c: (topic == k) + noise[:, k] for k, c in enumerate(TOPIC_COLUMNS)})
    roles = {**sim.roles, "text": None,
             "confounders": sim.roles["confounders"] + TOPIC_COLUMNS}
    return sim, data, roles


def _errors(sim, data, roles, nuisances, n_repeats=1):
    """Per nuisance (names, or a dict name -> nuisance), the tables over the items with
    status ok under all, the true effects and the naive error."""
    nuisances = nuisances if isinstance(nuisances, dict) else {n: n for n in nuisances}
    # one split each by default (the flexible nuisances'): the same rows and the same folds
    tables = {n: estimate_item_effects(data, **roles, nuisance=v,
                                       n_repeats=n_repeats).set_index("item")
              for n, v in nuisances.items()}
    ok = np.logical_and.reduce([t.status.eq("ok").to_numpy() for t in tables.values()])
    items = tables[next(iter(tables))].index[ok]
    true = sim.truth.set_index("item").true_ate.loc[items]
    arm = data.groupby(["item_id", "recommended"]).clicked.mean().unstack().loc[items]
    return {n: t.loc[items] for n, t in tables.items()}, true, arm[1] - arm[0] - true


REMAINDER = FlexibleNuisance(learner=FactorisedLearner(propensity_penalty="remainder"))


@pytest.fixture(scope="module")
def confounded():
    sim, data, roles = _log(1.0)
    return sim, data, roles, _errors(sim, data, roles, {
        "pooled": "pooled", "factorised": "factorised"})


def test_tail_log_is_heavy_tailed(confounded):
    n = confounded[0].truth.n
    assert np.mean(n < 500) > 0.8 and n.max() > 20 * n.min()


def test_factorised_removes_more_of_the_naive_bias(confounded):
    _, _, _, (tables, true, naive) = confounded
    error = {n: t.ate - true for n, t in tables.items()}
    removed = {n: 1 - e.mean() / naive.mean() for n, e in error.items()}
    # paired over items (same rows, same folds): the difference of the mean errors must
    # exceed 3 of its standard errors
    diff = error["pooled"] - error["factorised"]
    assert diff.mean() > 3 * diff.std() / np.sqrt(len(diff)), (removed, diff.mean())
    assert removed["factorised"] > removed["pooled"]


def test_remainder_penalty_removes_more_bias_than_empirical_bayes(confounded):
    """The propensity's remainder-targeted penalty (empirical Bayes / (rank + 2)) against
    the default (empirical Bayes in the propensity too; the outcome models the same), each
    averaged over three cross-fitting splits (``n_repeats=3``): paired over the ~90 items
    (same rows, same folds), the mean error must fall by more than 1 of its standard errors
    (one-sided: a rule no better passes with probability ~16%). The gain is small on this
    150-item log: 0.004 an item, 2.05 SEs over three splits, 0.7-1.7 SEs on one split (which
    is why one split is not enough); the 400-item benchmark 0.839 -> 0.899 of the naive bias
    removed (benchmarks/README.md, session 7)."""
    sim, data, roles, (_, _, naive) = confounded
    tables, true, _ = _errors(sim, data, roles, {"factorised": "factorised",
                                                 "remainder": REMAINDER}, n_repeats=3)
    diff = tables["factorised"].ate - tables["remainder"].ate  # same sign as the bias
    assert naive.mean() > 0
    assert diff.mean() > diff.std() / np.sqrt(len(diff)), diff.mean()


def test_factorised_coverage_in_binomial_band(confounded):
    _, _, _, (tables, true, _) = confounded
    t = tables["factorised"]
    covered = ((t.ci_low <= true) & (true <= t.ci_high)).to_numpy()
    band = 3 * np.sqrt(0.95 * 0.05 / len(covered))  # 3 binomial SEs around the nominal 95%
    assert abs(covered.mean() - 0.95) <= band, (covered.mean(), len(covered))


def test_not_worse_without_match_structure():
    sim, data, roles = _log(0.0, seed=8)
    tables, true, _ = _errors(sim, data, roles, ["pooled", "factorised"])
    sq = {n: (t.ate - true) ** 2 for n, t in tables.items()}
    diff = sq["factorised"] - sq["pooled"]
    # no structure: the empirical-Bayes penalty keeps the factors small, but not at zero.
    # Measured: MSE +5% here (2.8 paired SEs), RMSE +1.2% on the benchmark's 400-item logs;
    # the test allows MSE +10% (RMSE +5%) plus 2 paired SEs; the fixed
    # penalty 3 without empirical Bayes costs MSE +30% on the benchmark (RMSE 1.06 vs 0.93).
    bound = 0.10 * sq["pooled"].mean() + 2 * diff.std() / np.sqrt(len(diff))
    assert diff.mean() <= bound, (diff.mean(), sq["pooled"].mean())


def _synthetic(n_items=200, n=60_000, seed=0):
    """logit = a_k + x'beta + v_k' W' x, rank-2 W, heavy-tailed items whose factors v_k are
    one of 5 shared directions (the factorised model's own structure); the offset passed is
    the true a_k + x'beta."""
    rng = np.random.default_rng(seed)
    popularity = 1 / np.arange(1, n_items + 1) ** 0.8
    item = rng.choice(n_items, size=n, p=popularity / popularity.sum())
    X = rng.normal(size=(n, 6))
    W = rng.normal(size=(6, 2)) / 2
    V = (1.5 * rng.normal(size=(5, 2)))[rng.integers(5, size=n_items)]
    offset = rng.normal(-0.5, 0.5, size=n_items)[item] + X @ rng.normal(0, 0.3, size=6)
    logit = offset + ((X @ W) * V[item]).sum(1)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return np.column_stack([X, item]), y, offset, 1 / (1 + np.exp(-logit))


def _fit_synthetic(**settings):
    """Absolute errors of the test-row probabilities, their items, the items' training rows."""
    X, y, offset, p = _synthetic()
    tr, te = np.arange(40_000), np.arange(40_000, len(y))
    pred, _ = FactorisedLearner(rank=2, **settings).fit_predict(
        X[tr], y[tr], offset[tr], X[te], offset[te], family="logistic",
        validation=np.zeros(len(tr), bool), seed=0, categorical=True)
    item = X[:, -1].astype(np.int64)
    base = np.abs(1 / (1 + np.exp(-offset[te])) - p[te])
    return np.abs(pred - p[te]), base, item[te], np.bincount(item[tr], minlength=200)


@pytest.mark.parametrize("base", ["offset", "own"])
def test_learner_recovers_low_rank_slopes(base):
    # "own" does not use the offset: it fits the intercepts and shared slopes itself
    error, offset_error, _, _ = _fit_synthetic(base=base)
    # most of the gap between the offset and the true probabilities is closed
    assert error.mean() < 0.3 * offset_error.mean()


def test_atoms_prior_pulls_small_items_to_shared_directions():
    """Under a prior of a few shared directions, the atoms posterior beats Gaussian
    shrinkage toward zero on the small items (measured: mean error 0.047 vs 0.060)."""
    per_item = {}
    for prior in ("gaussian", "atoms"):
        error, _, item, rows = _fit_synthetic(base="own", factor_prior=prior)
        count = np.bincount(item, minlength=len(rows))
        small = (rows < 100) & (count > 0)
        per_item[prior] = (np.bincount(item, error, len(rows)) / np.maximum(count, 1))[small]
    diff = per_item["gaussian"] - per_item["atoms"]  # paired over the ~100 small items
    assert diff.mean() > 3 * diff.std() / np.sqrt(len(diff)), (diff.mean(), diff.std())


@pytest.mark.parametrize("learner", [FactorisedLearner(),
                                     FactorisedLearner(base="own", factor_prior="atoms")])
def test_deterministic_and_row_order_free(confounded, learner):
    sim, data, roles, (tables, _, _) = confounded
    small = data[data.item_id < 40]
    nuisance = FlexibleNuisance(learner=learner)
    a = estimate_item_effects(small, **roles, nuisance=nuisance)
    b = estimate_item_effects(small.sample(frac=1.0, random_state=3), **roles,
                              nuisance=nuisance)
    c = estimate_item_effects(small, **roles, nuisance=nuisance)
    pd.testing.assert_series_equal(a.ate, c.ate)
    np.testing.assert_allclose(a.ate, b.ate, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("settings, name", [
    (dict(rank=0), "rank"), (dict(rank=2.5), "rank"), (dict(n_alternations=0), "n_alternations"),
    (dict(factor_penalty=-1.0), "factor_penalty"), (dict(factor_penalty="big"), "factor_penalty"),
    (dict(propensity_penalty=0), "propensity_penalty"),
    (dict(propensity_penalty="small"), "propensity_penalty"),
    (dict(factor_penalty=None), "factor_penalty"),
    (dict(projection_penalty=0.0), "projection_penalty"), (dict(item_features="x"), "item_features"),
    (dict(factor_prior="npmle"), "factor_prior"), (dict(base="glm"), "base"),
])
def test_bad_parameters_name_themselves(confounded, settings, name):
    _, data, roles, _ = confounded
    nuisance = FlexibleNuisance(learner=FactorisedLearner(**settings))
    with pytest.raises(ValueError, match=name):
        estimate_item_effects(data.head(2000), **roles, nuisance=nuisance)


def test_also_needs_auto_and_item_feature(confounded):
    _, data, roles, _ = confounded
    with pytest.raises(ValueError, match="also"):
        estimate_item_effects(data.head(2000), **roles,
                              nuisance=FlexibleNuisance(also=("factorised",)))
    with pytest.raises(ValueError, match="item_feature"):
        estimate_item_effects(data.head(2000), **roles,
                              nuisance=FlexibleNuisance(learner="factorised", item_feature=False))


def test_stack_weights_pick_the_best_candidate():
    rng = np.random.default_rng(1)
    truth = rng.random(20_000)
    target = (rng.random(20_000) < truth).astype(float)
    glm, boosted = np.full(20_000, target.mean()), np.clip(truth + rng.normal(0, 0.3, 20_000), .01, .99)
    weights, _ = stack_weights(glm, [boosted, truth], target, "logistic")
    np.testing.assert_allclose(weights, [0.0, 1.0])


def test_auto_stacks_the_factorised_model(confounded):
    _, data, roles, _ = confounded
    est = ItemEffectEstimator(nuisance="auto").fit(InteractionLog(data[data.item_id < 60], **roles))
    models = est.nuisance_models_
    assert {"loss_factorised", "weight_factorised"} <= set(models.columns)
    assert np.all(models.weight_flexible + models.weight_factorised <= 1 + 1e-12)
    # the stack's loss is no worse than the GLM's or the factorised model's alone
    assert np.all(models.loss_final <= np.minimum(models.loss_glm, models.loss_factorised) + 1e-12)


def test_propensity_penalty_applies_to_the_propensity_only():
    learner = FactorisedLearner(factor_penalty=3.0, propensity_penalty="remainder")
    propensity, outcome = FlexibleNuisance(learner=learner).learners()
    assert (propensity.factor_penalty, outcome.factor_penalty) == ("remainder", 3.0)
    # None (default): the propensity as the outcome models
    same = FlexibleNuisance(learner=FactorisedLearner(factor_penalty=3.0)).learners()
    assert same[0] == same[1] == FactorisedLearner(factor_penalty=3.0)




def test_one_small_item_keeps_the_offset_where_it_is_right():
    """One item of 400 rows, 25 columns, the offset the true linear predictor: the factors
    have nothing to share, so the learner must stay near the offset. (Its shared factor mean
    was nearly unpenalised and fitted noise: |logit - offset| 0.48 on average, held-out log
    loss +0.035; now 0.11 and +0.002.)"""
    rng = np.random.default_rng(3)
    n, d = 4400, 25
    X = rng.normal(size=(n, d))
    offset = -0.5 + X @ rng.normal(0, 0.2, size=d)
    y = (rng.random(n) < 1 / (1 + np.exp(-offset))).astype(float)
    Xi = np.column_stack([X, np.zeros(n)])
    tr, te = np.arange(400), np.arange(400, n)
    pred, _ = FactorisedLearner().fit_predict(
        Xi[tr], y[tr], offset[tr], Xi[te], offset[te], family="logistic",
        validation=np.zeros(len(tr), bool), seed=0, categorical=True)
    moved = np.abs(np.log(pred) - np.log1p(-pred) - offset[te])
    log_loss = lambda p: -np.mean(y[te] * np.log(p) + (1 - y[te]) * np.log1p(-p))
    assert moved.mean() < 0.25
    # 4,000 test rows: the log loss's SE is ~0.01, the old excess 0.035
    assert log_loss(pred) < log_loss(1 / (1 + np.exp(-offset[te]))) + 0.01
