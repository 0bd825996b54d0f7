"""Fairness audit: recovery of planted effect and exposure disparities, calibration under no
disparity, known answers for the exposure model, more than two groups, bad inputs, report."""
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression

import causalrec as cr
from causalrec.fairness.exposure import _ExposureModel
from causalrec.schema import SchemaError

# No text confounding, so the numeric confounders suffice (no text encoding: fast tests).
# Low popularity skew and moderate numeric confounding keep the simulator's exposure logit
# away from its +-3.5 clip, which would otherwise attenuate the planted logit shift.
SETTINGS = dict(n_items=30, n_rows=80_000, popularity_skew=0.5, numeric_confounding=0.6,
                text_confounding=0.0, effect_scale=2.0, disparity_share=0.4)
Z3 = 3.0  # tolerance in standard errors: a fixed-seed check that fails 0.3% of the time


def roles(sim):
    out = dict(sim.roles)
    out.pop("text")
    return out  # categorical keeps "user_group": the audit must leave it out of its models


def true_disparity(sim, items, group="B", reference="A"):
    """Row-weighted mean of the true per-item effect differences (from the simulator)."""
    gt = sim.group_truth.set_index(["group", "item"])
    g, r = gt.loc[group].reindex(items), gt.loc[reference].reindex(items)
    w = (g["n"] + r["n"]).to_numpy(float)
    return float(w @ (g["true_ate"] - r["true_ate"]).to_numpy() / w.sum())


@pytest.fixture(scope="module")
def planted():
    sim = cr.datasets.simulate_log(**SETTINGS, effect_disparity=1.0, exposure_disparity=0.5,
                                   seed=2)
    # a provider column with a known answer: items without any effect vs the others
    no_effect = sim.truth.set_index("item")["true_ate"].abs() < 1e-12
    df = sim.data.assign(provider=np.where(no_effect.reindex(sim.data["item_id"]).to_numpy(),
                                           "no_effect", "effective"))
    audit = cr.FairnessAudit(**roles(sim), group="user_group", provider="provider").fit(df)
    return sim, audit


@pytest.fixture(scope="module")
def no_effect_disparity():
    """Effects equal across groups; exposure still lower for group B. Four seeds."""
    runs = []
    for seed in (11, 12, 13, 14):
        sim = cr.datasets.simulate_log(**dict(SETTINGS, n_items=40), effect_disparity=0.0,
                                       exposure_disparity=0.5, seed=seed)
        runs.append((sim, cr.FairnessAudit(**roles(sim), group="user_group").fit(sim.data)))
    return runs


# ----------------------------------------------------------------- planted disparities
def test_recovers_planted_effect_disparity(planted):
    sim, audit = planted
    planted_items = sim.truth.loc[sim.truth["planted"], "item"]
    clean_items = sim.truth.loc[~sim.truth["planted"], "item"]
    assert audit.reference_ == "A"  # the largest group
    for items, should_be_negative in ((planted_items, True), (clean_items, False)):
        overall = audit.overall_disparity(items).iloc[0]
        ok = audit.disparity_.query("status == 'ok'")
        assert overall["n_items"] == ok["item"].isin(items).sum() > 5
        truth = true_disparity(sim, ok.loc[ok["item"].isin(items), "item"])
        assert abs(overall["disparity"] - truth) < Z3 * overall["se"]
        if should_be_negative:  # B gains nothing from planted items: a clear negative gap
            assert truth < -3 * overall["se"] and overall["ci_high"] < 0


def test_flags_planted_items_more_often_than_clean_ones(planted):
    sim, audit = planted
    d = audit.disparity_.merge(sim.truth[["item", "planted", "true_ate"]], on="item")
    d = d[d["status"] == "ok"]
    rate = d.groupby("planted")["flagged"].mean()
    assert rate[True] > rate[False]
    # a planted item without any effect has no disparity to plant: a flag there is one of
    # the false discoveries BH allows (item 19 here: B's 60 treated rows, p = 0.03)
    real = d["planted"] & (d["true_ate"].abs() > 1e-12)
    assert (d.loc[d["flagged"] & real, "disparity"] < 0).all()
    assert audit.flagged_share_ == pytest.approx(d["flagged"].mean())
    # q-values are BH-adjusted p-values: monotone in p, never below p
    ordered = d.sort_values("p_value")
    assert (np.diff(ordered["q_value"]) >= -1e-12).all() and (d["q_value"] >= d["p_value"]).all()


def test_adjusted_exposure_matches_planted_logit_shift(planted):
    sim, audit = planted
    e = audit.exposure_.set_index("group")
    planted_shift = -sim.params["exposure_disparity"]
    assert abs(e.loc["B", "logit_shift"] - planted_shift) < Z3 * e.loc["B", "logit_shift_se"]
    assert e.loc["B", "logit_shift_high"] < 0 and e.loc["A", "logit_shift"] == 0
    # against users like them, B is exposed less and A more
    assert e.loc["B", "ratio_high"] < 1 < e.loc["A", "ratio_low"]
    assert e.loc["B", "exposure_rate"] == pytest.approx(
        sim.data.query("user_group == 'B'")["recommended"].mean())


def usable_true_uplift(sim, audit, key="group", key_of_item=None):
    """True uplift (rows x true effect) summed over the segments the audit could use."""
    seg = audit.group_effects_.query("n > 0")
    usable = (seg["status"] == "ok").groupby(seg["item"]).all()
    truth = sim.group_truth[sim.group_truth["item"].isin(usable.index[usable])]
    truth = truth.assign(uplift=truth["n"] * truth["true_ate"])
    if key_of_item is not None:
        truth = truth.assign(**{key: key_of_item.reindex(truth["item"]).to_numpy()})
    return truth.groupby(key)["uplift"].sum()


def test_provider_without_effect_gets_exposure_beyond_its_benefit(planted):
    sim, audit = planted
    p = audit.providers_.set_index("provider")
    assert p["exposure_share"].sum() == pytest.approx(1) and p["uplift_share"].sum() == pytest.approx(1)
    assert p["n_items_total"].sum() == audit.group_effects_["item"].nunique()
    provider = sim.data.assign(provider=audit.data_["provider"]).groupby("item_id")["provider"].first()
    truth = usable_true_uplift(sim, audit, "provider", provider)
    assert truth["no_effect"] == 0
    assert (np.abs(p["uplift"] - truth) < Z3 * p["uplift_se"]).all()
    # items without effect still take recommendations: the others get less than their due
    assert p.loc["no_effect", "exposure_share"] > 0.05
    assert p.loc["effective", "ratio_high"] < 1


# ----------------------------------------------------------------- no effect disparity
def test_no_effect_disparity_keeps_flags_near_nominal(no_effect_disparity):
    p_values = []
    for sim, audit in no_effect_disparity:
        ok = audit.disparity_.query("status == 'ok'")
        assert len(ok) >= 35
        # with no true disparity BH flags anything at all in at most ~fdr of the runs
        assert audit.flagged_share_ <= audit.fdr
        overall = audit.overall_disparity().iloc[0]
        assert abs(overall["disparity"] - true_disparity(sim, ok["item"])) < Z3 * overall["se"]
        p_values.append(ok["p_value"].to_numpy())
    p_values = np.concatenate(p_values)
    m = len(p_values)
    # the p-values themselves are calibrated: 5% below 0.05 within binomial noise, uniform
    assert (p_values < 0.05).mean() <= 0.05 + Z3 * np.sqrt(0.05 * 0.95 / m)
    assert stats.kstest(p_values, "uniform").pvalue > 0.001
    flagged = np.mean([audit.flagged_share_ for _, audit in no_effect_disparity])
    assert flagged <= audit.fdr / 2


def test_exposure_versus_benefit_recovers_the_true_ratio(no_effect_disparity):
    """Equal effects, lower exposure for B: B gets less exposure than its share of the
    benefit. The estimated ratio matches the one computed from the true effects."""
    sim, audit = no_effect_disparity[0]
    b = audit.benefit_.set_index("group")
    assert b["exposure_share"].sum() == pytest.approx(1) and b["uplift_share"].sum() == pytest.approx(1)
    assert b["n_items"].nunique() == 1  # one common set of items for all groups
    true_share = usable_true_uplift(sim, audit) / usable_true_uplift(sim, audit).sum()
    assert (np.abs(b["uplift_share"] - true_share) < Z3 * b["uplift_share_se"]).all()
    true_ratio = b["exposure_share"] / true_share
    assert true_ratio["B"] < 1 and b.loc["B", "exposure_uplift_ratio"] < 1
    assert (b["ratio_low"] < b["exposure_uplift_ratio"]).all()
    assert (b["exposure_uplift_ratio"] < b["ratio_high"]).all()
    e = audit.exposure_.set_index("group")
    assert abs(e.loc["B", "logit_shift"] + sim.params["exposure_disparity"]) < Z3 * e.loc["B", "logit_shift_se"]


# ----------------------------------------------------------------- known answers
@pytest.fixture(scope="module")
def logistic_data():
    rng = np.random.default_rng(0)
    K, n = 12, 6000
    item = rng.integers(K, size=n)
    x = rng.normal(size=(n, 2))
    g = (rng.random(n) < 0.4).astype(float)
    eta = rng.normal(-1, 0.5, K)[item] + x @ [0.8, -0.4] - 0.5 * g
    t = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return item, K, x, g, t


def test_exposure_model_matches_unpenalised_mle_and_fisher_information(logistic_data):
    """With item slopes forced shared, the model is a logistic regression with item fixed
    effects: its group shift, standard error and score variance equal the textbook ones."""
    item, K, x, g, t = logistic_data
    est = cr.ItemEffectEstimator(shrinkage=1e9, intercept_penalty=0.0, device="cpu")
    full = np.column_stack([np.eye(K)[item], x, g])

    def mle(X):
        """Coefficients, fitted probabilities and the inverse information of the full design."""
        fit = LogisticRegression(C=1e10, fit_intercept=False, tol=1e-12, max_iter=10_000).fit(X, t)
        p = fit.predict_proba(X)[:, 1]
        return fit.coef_[0], p, np.linalg.inv(full.T @ (full * (p * (1 - p))[:, None]))

    coef, _, cov_full = mle(full)
    shift, cov = _ExposureModel(est, item, K).fit(np.column_stack([x, g]), t, n_shared=1).shared_tail_
    assert shift[0] == pytest.approx(coef[-1], abs=1e-5)
    assert np.sqrt(cov[0, 0]) == pytest.approx(np.sqrt(cov_full[-1, -1]), rel=1e-4)

    _, p_null, cov_null = mle(full[:, :-1])
    null = _ExposureModel(est, item, K).fit(x, t)
    np.testing.assert_allclose(null.e_, p_null, atol=1e-5)
    # efficient score variance of the indicator = 1 / (inverse information)_gg at the null fit
    assert null.score_variance(x, g) == pytest.approx(1 / cov_null[-1, -1], rel=1e-4)


# ----------------------------------------------------------------- more than two groups
@pytest.fixture(scope="module")
def three_groups():
    sim = cr.datasets.simulate_log(**dict(SETTINGS, n_items=20, n_rows=24_000), n_groups=3,
                                   effect_disparity=1.0, exposure_disparity=0.5, seed=4)
    return sim, cr.FairnessAudit(**roles(sim), group="user_group").fit(sim.data)


def test_three_groups_compare_each_with_the_largest(three_groups):
    sim, audit = three_groups
    assert audit.reference_ == sim.data["user_group"].value_counts().idxmax() == "A"
    d = audit.disparity_
    assert sorted(d["group"].unique()) == ["B", "C"] and len(d) == 2 * 20
    e = audit.exposure_.set_index("group")
    for g in ("B", "C"):  # the simulator lowers exposure of every group but the first
        assert abs(e.loc[g, "logit_shift"] + 0.5) < Z3 * e.loc[g, "logit_shift_se"]
    assert set(audit.overall_disparity_["group"]) == {"B", "C"}


# ----------------------------------------------------------------- bad inputs, statuses
@pytest.fixture(scope="module")
def small():
    sim = cr.datasets.simulate_log(n_items=8, n_rows=8_000, popularity_skew=0.3,
                                   text_confounding=0.0, n_groups=3, seed=3)
    return sim.data, roles(sim)


@pytest.mark.parametrize("mutate, kwargs, error, match", [
    (lambda d: d, dict(group="nope"), SchemaError, "nope"),
    (lambda d: d, dict(group=None), SchemaError, "group column"),
    (lambda d: d.assign(user_group="A"), dict(group="user_group"), SchemaError, "single group"),
    (lambda d: d.assign(user_group=d["user_group"].where(d.index > 5)), dict(group="user_group"),
     SchemaError, "missing values"),
    (lambda d: d, dict(group="user_group", provider="nope"), SchemaError, "nope"),
    (lambda d: d, dict(group="user_group", provider="user_id"), SchemaError, "within an item"),
    (lambda d: d, dict(group="user_group", compare="all"), ValueError, "compare"),
    (lambda d: d, dict(group="user_group", fdr=1.5), ValueError, "fdr"),
    (lambda d: d, dict(group="user_group", reference="Z"), ValueError, "reference"),
    (lambda d: d, dict(group="user_group", estimator=cr.ItemEffectEstimator(method="magic")),
     ValueError, "method"),
])
def test_bad_inputs_raise_documented_errors(small, mutate, kwargs, error, match):
    data, r = small
    with pytest.raises(error, match=match):
        cr.FairnessAudit(**r, **kwargs).fit(mutate(data))


def test_group_without_treated_rows_and_tiny_group_get_a_status(small):
    data, r = small
    data = data.assign(recommended=np.where(data["user_group"] == "C", 0, data["recommended"]))
    data.loc[data.index[:20], "user_group"] = "D"  # 20 rows: below min_group_rows
    audit = cr.FairnessAudit(**r, group="user_group", provider="item_provider").fit(data)
    assert audit.groups_["status"].to_dict() == {"A": "ok", "B": "ok", "C": "no_treated",
                                                 "D": "too_few_rows"}
    seg = audit.group_effects_.set_index("group")
    assert (seg.loc["C", "status"] == "no_treated").all() and seg.loc["C", "ate"].isna().all()
    assert len(audit.group_effects_) == 8 * 4  # every item x group pair is reported
    d = audit.disparity_.set_index("group")
    assert (d.loc["C", "status"] == "group_no_treated").all()
    assert (d.loc["D", "status"] == "group_too_few_rows").all()
    assert not d.loc[["C", "D"], "flagged"].any()
    e = audit.exposure_.set_index("group")
    assert e.loc["C", "exposure_rate"] == 0 and e.loc["C", "exposure_ratio"] == 0
    assert np.isnan(e.loc["C", "logit_shift"]) and e.loc["C", "status"] == "no_treated"
    assert np.isfinite(e.loc["B", "logit_shift_se"])
    b = audit.benefit_.set_index("group")
    assert b.loc["C", "status"] == "no_treated" and b.loc[["A", "B"], "exposure_share"].sum() == pytest.approx(1)
    assert "C: no_treated" in str(audit.summary())


def test_results_need_fit_and_metrics_match_rates(small):
    data, r = small
    audit = cr.FairnessAudit(**r, group="user_group")
    for read in (audit.overall_disparity, lambda: audit.metrics, audit.summary, audit.to_html):
        with pytest.raises(cr.NotFittedError, match="not fitted"):
            read()
    audit.fit(data)
    assert {"item", "group", "ate", "se", "ci_low", "ci_high", "n", "status"} <= set(audit.group_effects_)
    m = audit.metrics
    by_group = data.groupby("user_group")
    np.testing.assert_allclose(m["exposure_rate"], by_group["recommended"].mean())
    np.testing.assert_allclose(m["outcome_rate"], by_group["clicked"].mean())
    np.testing.assert_allclose(audit.exposure_.set_index("group")["exposure_rate"], m["exposure_rate"])


def test_fit_takes_a_rows_backend_and_a_refit_starts_fresh(small):
    """``fit`` on a rows backend is the same sequence as on the frame; refitting the same
    audit on other rows leaves nothing cached from the first fit (metrics are the new rows')."""
    from causalrec.fairness.rows import LocalAuditRows
    data, r = small
    half = data.iloc[2000:4000]
    audit = cr.FairnessAudit(**r, group="user_group")
    audit.fit(data.iloc[:2000]).metrics  # cached
    refit = audit.fit(LocalAuditRows(half))
    fresh = cr.FairnessAudit(**r, group="user_group").fit(half)
    for name in ("groups_", "group_effects_", "disparity_", "exposure_", "benefit_", "metrics"):
        pd.testing.assert_frame_equal(getattr(refit, name), getattr(fresh, name), obj=name)
    np.testing.assert_allclose(refit.metrics["exposure_rate"],
                               half.groupby("user_group")["recommended"].mean())


def test_report_is_self_contained_and_escapes_data(small, tmp_path):
    data, r = small
    evil = "<script>alert('x')</script>"
    data = data.assign(user_group=data["user_group"].map({"A": evil, "B": "B&B", "C": "C"}),
                       item_provider="<b>" + data["item_provider"])
    audit = cr.FairnessAudit(**r, group="user_group", provider="item_provider").fit(data)
    path = audit.report(tmp_path / "sub" / "audit.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in page
    assert "<script" not in page and "<b>provider" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and "B&amp;B" in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 4
    for section in ("Effect disparity", "Exposure disparity", "Exposure versus benefit",
                    "Outcome metrics by group"):
        assert section in page


def test_changing_the_reference_only_relabels_differences(small):
    data, r = small
    vs_a, vs_c = (cr.FairnessAudit(**r, group="user_group", reference=ref).fit(data)
                  .disparity_.pivot(index="item", columns="group", values="disparity")
                  for ref in (None, "C"))
    np.testing.assert_allclose(vs_c["B"], vs_a["B"] - vs_a["C"], atol=1e-10)
    np.testing.assert_allclose(vs_c["A"], -vs_a["C"], atol=1e-10)


def test_max_min_uses_a_homogeneity_test(small):
    data, r = small
    audit = cr.FairnessAudit(**r, group="user_group", compare="max-min").fit(data)
    d = audit.disparity_.set_index("item")
    assert len(d) == data["item_id"].nunique() and (d["disparity"].dropna() >= 0).all()
    eff = audit.group_effects_
    for item in d.index[d["status"] == "ok"]:
        part = eff[(eff["item"] == item) & (eff["status"] == "ok")]
        w = 1 / part["se"] ** 2
        q = (w * (part["ate"] - (w * part["ate"]).sum() / w.sum()) ** 2).sum()
        assert d.loc[item, "p_value"] == pytest.approx(stats.chi2.sf(q, len(part) - 1))
        assert d.loc[item, "disparity"] == pytest.approx(part["ate"].max() - part["ate"].min())
        assert d.loc[item, "group"] == part.loc[part["ate"].idxmax(), "group"]
    assert list(audit.overall_disparity_["group"]) == ["max"]


def test_missing_indicator_reaches_the_effect_and_the_exposure_models(small):
    """missing="indicator": the audit's group effects on a log with missing tenure are
    ``estimate_item_effects(..., by=group, missing="indicator")``, and its exposure models
    those of the log filled by hand (the median of the observed values) with the 0/1
    indicator as a confounder of its own (the effects are not: the folds hash the
    confounders' values). Without it the error names the option."""
    from causalrec.estimate.missing_values import indicator_name
    data, r = small
    data = data.assign(tenure=data["tenure"].mask(np.arange(len(data)) % 6 == 0))
    with pytest.raises(SchemaError, match="column 'tenure'.*pass missing='indicator'"):
        cr.FairnessAudit(**r, group="user_group").fit(data)
    audit = cr.FairnessAudit(**r, group="user_group", missing="indicator").fit(data)
    flag = indicator_name("tenure")
    confounders = [c for col in r["confounders"]
                   for c in ([col, flag] if col == "tenure" else [col])]
    by_hand = data.assign(tenure=data["tenure"].fillna(data["tenure"].median()),
                          **{flag: data["tenure"].isna().astype(float)})
    filled = cr.FairnessAudit(**{**r, "confounders": confounders}, group="user_group").fit(by_hand)
    pd.testing.assert_frame_equal(audit.exposure_, filled.exposure_, check_exact=False,
                                  rtol=1e-6)
    assert np.isfinite(audit.exposure_["logit_shift_se"].dropna()).all()
    table = cr.estimate_item_effects(data, **{**r, "categorical": [
        c for c in r["categorical"] if c != "user_group"]}, by="user_group", missing="indicator")
    np.testing.assert_allclose(audit.group_effects_.dropna(subset=["ate"])["ate"],
                               table.dropna(subset=["ate"])["ate"], rtol=1e-10)


def test_group_labels_do_not_move_the_audit():
    """The same groups labelled 0/1 instead of "A"/"B": the item x group segments' folds come
    from their rows, not their labels, so every group effect and disparity is unchanged
    (before: up to 0.3 SE)."""
    s = cr.datasets.simulate_log(n_items=8, n_users=400, n_rows=3000, seed=1)
    df = s.data.drop(columns=["user_text", "item_text", "propensity"])
    codes = {"A": 0, "B": 1}

    def audit(frame):
        return cr.FairnessAudit(item="item_id", treatment="recommended", outcome="clicked",
                                group="user_group", confounders=["user_activity", "hour", "tenure"],
                                categorical=["device"],
                                estimator=cr.ItemEffectEstimator(dtype="float64")).fit(frame)

    base, coded = audit(df), audit(df.assign(user_group=df["user_group"].map(codes)))
    for name in ("group_effects_", "disparity_"):
        a = getattr(base, name).assign(group=lambda t: t["group"].map(codes))
        b = getattr(coded, name)
        a, b = (t.set_index(["item", "group"]).sort_index() for t in (a, b))
        value = "ate" if name == "group_effects_" else "disparity"
        np.testing.assert_allclose(b[value], a[value], rtol=0, atol=1e-9 * a["se"].min())
