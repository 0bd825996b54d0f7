"""Every public estimator keeps the one contract (causalrec.base): keyword-only parameters
stored as given and checked at fit (a bad value raises ValueError naming it), get_params /
set_params, fit returns self, results before fit raise NotFittedError, and summary() is a
causalrec.reporting.Summary with text and HTML."""
import numpy as np
import pytest

import causalrec as cr
from causalrec.bandit import BanditEstimator
from causalrec.reporting import Summary


@pytest.fixture(scope="module")
def sim():
    return cr.datasets.simulate_log(n_items=8, n_rows=3000, seed=0)


def _log(sim):
    roles = {k: v for k, v in sim.roles.items() if k != "text"}
    return cr.InteractionLog(sim.data, **roles)


def _glm_data(sim):
    df = sim.data
    X = df[["user_activity", "tenure"]].to_numpy(float)
    segment = df["item_id"].to_numpy()
    return (X, df["clicked"].to_numpy(float), segment), (X, segment)


def _net_log():
    net = cr.datasets.simulate_net_log(1500, n_categories=4, items_per_category=4, seed=0)
    return cr.InteractionLog(net.data, **net.roles)


# name: (make(**params), fit(estimator, sim), a bad parameter value, a result before fit)
CASES = {
    "ItemEffectEstimator": (
        lambda **p: cr.ItemEffectEstimator(**p), lambda est, sim: est.fit(_log(sim)),
        ("method", "bogus"), lambda est, sim: est.summary()),
    "BanditEstimator": (
        lambda **p: BanditEstimator(**p),
        lambda est, sim: est.fit(sim.data, item="item_id", outcome="clicked",
                                 propensity="propensity", confounders=["user_activity"]),
        ("method", "bogus"), lambda est, sim: est.summary()),
    "FairnessAudit": (
        lambda **p: cr.FairnessAudit(item="item_id", treatment="recommended", outcome="clicked",
                                     confounders=["user_activity", "hour", "tenure"],
                                     group="user_group", **p),
        lambda est, sim: est.fit(sim.data), ("compare", "bogus"), lambda est, sim: est.summary()),
    "UpliftModel": (
        lambda **p: cr.UpliftModel(features=["user_activity", "tenure"], **p),
        lambda est, sim: est.fit(_log(sim)), ("fdr", 2.0), lambda est, sim: est.summary()),
    "NetEffectEstimator": (
        lambda **p: cr.NetEffectEstimator(**p), lambda est, sim: est.fit(_net_log()),
        ("additive", "bogus"), lambda est, sim: est.summary()),
    "SegmentGLM": (
        lambda **p: cr.SegmentGLM(**p), lambda est, sim: est.fit(*_glm_data(sim)[0]),
        ("family", "bogus"), lambda est, sim: est.predict(*_glm_data(sim)[1])),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, sim):
    make, fit, bad, before = CASES[request.param]
    return request.param, make, fit, bad, before


def test_bad_parameter_raises_at_fit_naming_it(case, sim):
    name, make, fit, (param, value), _ = case
    est = make(**{param: value})  # stored as given: nothing is checked yet
    assert getattr(est, param) == value
    with pytest.raises(ValueError, match=param):
        fit(est, sim)


def test_result_before_fit_raises_not_fitted(case, sim):
    _, make, _, _, before = case
    with pytest.raises(cr.NotFittedError):
        before(make(), sim)


def test_params_round_trip_and_keyword_only(case):
    _, make, _, (param, value), _ = case
    est = make()
    params = est.get_params()
    assert param in params
    assert est.set_params(**{param: value}) is est and est.get_params()[param] == value
    est.set_params(**params)
    assert est.get_params() == params
    with pytest.raises(ValueError, match="no parameter"):
        est.set_params(not_a_parameter=1)
    with pytest.raises(TypeError):
        type(est)(*params.values())  # positional arguments are refused


def test_fit_returns_self_and_summary_is_a_summary(case, sim):
    name, make, fit, _, _ = case
    est = make()
    assert fit(est, sim) is est
    fresh = est.clone()  # same parameters, nothing learned
    assert type(fresh) is type(est) and fresh is not est and fresh.get_params() == est.get_params()
    assert not [k for k in vars(fresh) if k.endswith("_") and not k.startswith("_")]
    if name == "SegmentGLM":  # a building block: no summary
        assert np.isfinite(est.coef_).all()
        return
    summary = est.summary()
    assert isinstance(summary, Summary)
    text, page = str(summary), summary._repr_html_()
    assert summary.title in text and len(summary.info) > 0
    assert page.startswith("<h4>") and "<table>" in page


# ------------------------------------------------- scikit-learn's contract (issue 24)
def test_every_public_estimator_is_covered():
    import causalrec.bandit, causalrec.fairness, causalrec.glm, causalrec.uplift  # noqa: F401
    from causalrec.base import BaseEstimator

    def subclasses(cls):
        return {s for c in cls.__subclasses__() for s in {c} | subclasses(c)}
    assert {c.__name__ for c in subclasses(BaseEstimator)} <= set(CASES)


def test_sklearn_clone_and_deep_params(case, sim):
    from sklearn.base import clone

    name, make, fit, (param, value), _ = case
    est = make(**{param: value})
    copy = clone(est)
    assert type(copy) is type(est) and copy is not est
    assert copy.get_params(deep=False).keys() == est.get_params(deep=False).keys()
    assert getattr(copy, param) == value
    deep, shallow = est.get_params(deep=True), est.get_params(deep=False)
    assert shallow.items() <= deep.items()
    fitted = clone(fit(make(), sim))  # a fitted estimator clones to an unfitted one
    assert not [k for k in vars(fitted) if k.endswith("_") and not k.startswith("_")]


def test_nested_estimator_params_round_trip():
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression

    inner = cr.ItemEffectEstimator(nuisance=LogisticRegression(C=2.0))
    audit = cr.FairnessAudit(item="i", treatment="t", outcome="y", group="g", estimator=inner)
    deep = audit.get_params(deep=True)
    assert deep["estimator"] is inner and deep["estimator__method"] == "aipw"
    assert deep["estimator__nuisance__C"] == 2.0
    audit.set_params(estimator__method="ipw", estimator__nuisance__C=0.5, fdr=0.2)
    assert inner.method == "ipw" and inner.nuisance.C == 0.5 and audit.fdr == 0.2
    copy = clone(audit)
    assert copy.estimator is not inner and copy.estimator.get_params(deep=False).keys() \
        == inner.get_params(deep=False).keys()
    assert copy.estimator.nuisance is not inner.nuisance and copy.estimator.nuisance.C == 0.5
    with pytest.raises(ValueError, match="no parameter"):
        audit.set_params(estimator__bogus=1)


def test_uplift_forwards_estimator_options():
    model = cr.UpliftModel(features=["user_activity"], seed=3)
    assert model.set_params(n_folds=3, fdr=0.1) is model
    params = model.get_params()
    assert params["n_folds"] == 3 and params["seed"] == 3 and params["fdr"] == 0.1
    assert model.estimator_options == {"seed": 3, "n_folds": 3}
    from sklearn.base import clone
    assert clone(model).get_params() == params


def test_not_fitted_error_is_sklearns():
    from sklearn.exceptions import NotFittedError

    assert issubclass(cr.NotFittedError, NotFittedError)
    for kind in (ValueError, AttributeError, RuntimeError):
        with pytest.raises(kind):
            cr.ItemEffectEstimator().effect()


# ------------------------------------------------- the effect estimator's results (issue 27)
def _numeric_fit(seed, **kw):
    sim = cr.datasets.simulate_log(n_items=40, n_rows=12_000, text_confounding=0.0, seed=seed)
    est = cr.ItemEffectEstimator(**kw).fit(_log(sim))
    return sim, est


def test_effect_interval_is_a_pair_of_arrays():
    _, est = _numeric_fit(0)
    low, high = est.effect_interval()
    assert isinstance(low, np.ndarray) and isinstance(high, np.ndarray)
    np.testing.assert_allclose(low, est.effects_["ci_low"], equal_nan=True)
    np.testing.assert_allclose(high, est.effects_["ci_high"], equal_nan=True)
    frame = est.effect_interval_frame(alpha=0.1)
    assert list(frame.index) == list(est.effect().index) and list(frame) == ["ci_low", "ci_high"]
    low90, high90 = est.effect_interval(alpha=0.1)
    np.testing.assert_array_equal(frame["ci_low"].to_numpy(), low90)
    ok = np.isfinite(low)
    assert (low90[ok] > low[ok]).all() and (high90[ok] < high[ok]).all()
    np.testing.assert_array_equal(est.summary_frame(alpha=0.1)["ci_high"].to_numpy(), high90)


def test_ate_is_the_row_weighted_mean_of_ok_items():
    _, est = _numeric_fit(0)
    overall = est.ate()
    ok = est.effects_[est.effects_["status"] == "ok"]
    w = ok["n"] / ok["n"].sum()
    assert overall["ate"] == pytest.approx(float((w * ok["ate"]).sum()), rel=1e-12)
    assert overall["se"] == pytest.approx(float(np.sqrt((w ** 2 * ok["se"] ** 2).sum())), rel=1e-12)
    assert overall["n_items"] == len(ok) and overall["n"] == ok["n"].sum()
    assert overall["ci_low"] < overall["ate"] < overall["ci_high"] and 0 <= overall["p_value"] <= 1


def test_ate_interval_covers_the_simulated_truth():
    # 8 independent logs, 95% intervals: a miss has probability 0.05, so 3 or more misses
    # out of 8 has binomial probability 0.006 if the intervals are calibrated
    misses = 0
    for seed in range(8):
        sim, est = _numeric_fit(seed)
        overall = est.ate()
        ok = est.effects_[est.effects_["status"] == "ok"].merge(sim.truth[["item", "true_ate"]],
                                                                on="item")
        truth = np.average(ok["true_ate"], weights=ok["n"])
        misses += not (overall["ci_low"] <= truth <= overall["ci_high"])
    assert misses <= 2
