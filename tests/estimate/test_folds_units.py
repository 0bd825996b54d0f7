"""Unit-aware cross-fitting (a unit's rows never on both sides of any split: outer folds,
early stopping, ``auto``'s stack) and answers that depend on the data only (confounder names
and order do not matter)."""
import os
import shutil
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import causalrec as cr
from causalrec.estimate.folds import unit_folds
from causalrec.exceptions import DataWarning
from causalrec.nuisance import FlexibleNuisance
from causalrec.schema import InteractionLog, SchemaError

ROLES = dict(item="item_id", treatment="recommended", outcome="clicked",
             confounders=["user_activity", "hour", "tenure"], categorical=["device", "user_group"])


@pytest.fixture(scope="module")
def sim_df():
    """20 items, 300 users recurring across them (6,000 rows)."""
    return cr.datasets.simulate_log(n_items=20, n_users=300, n_rows=6000, seed=1).data


def _fit(df, roles=ROLES, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # duplicates, unit-like ids
        return cr.ItemEffectEstimator(**options).fit(InteractionLog(df, **roles))


def _one_fold_per_unit(folds, units) -> bool:
    return bool((pd.Series(np.asarray(folds)).groupby(np.asarray(units)).nunique() == 1).all())


# ---- unit_folds: a fold from the unit's value alone
def test_unit_folds_depend_on_the_unit_value_only():
    rng = np.random.default_rng(0)
    units = rng.integers(500, size=5000)
    folds = unit_folds(units, 3, seed=7)
    assert folds.dtype == np.int64 and set(np.unique(folds)) == {0, 1, 2}
    assert _one_fold_per_unit(folds, units)
    # row order, the other rows and the spelling of a number (3, 3.0, "int8") do not matter
    order = rng.permutation(len(units))
    np.testing.assert_array_equal(unit_folds(units[order], 3, seed=7), folds[order])
    np.testing.assert_array_equal(unit_folds(units[:100], 3, seed=7), folds[:100])
    np.testing.assert_array_equal(unit_folds(units.astype(float), 3, seed=7), folds)
    np.testing.assert_array_equal(unit_folds(pd.Series(units, dtype="int16"), 3, seed=7), folds)
    # shares of the 500 units per fold: binomial(500, 1/3), sd 0.021
    shares = np.bincount(unit_folds(np.arange(500), 3, seed=7), minlength=3) / 500
    assert np.abs(shares - 1 / 3).max() < 4 * np.sqrt(1 / 3 * 2 / 3 / 500)
    assert not np.array_equal(unit_folds(units, 3, seed=8), folds)  # the seed re-deals
    strings = np.array([f"user-{u}" for u in units], dtype=object)
    np.testing.assert_array_equal(unit_folds(pd.Series(strings, dtype="str"), 3, 7),
                                  unit_folds(strings, 3, 7))
    assert _one_fold_per_unit(unit_folds(strings, 3, 7), strings)
    np.testing.assert_array_equal(unit_folds(units, 1, 7), np.zeros(len(units), dtype=np.int64))


def test_unit_folds_reject_missing_units():
    with pytest.raises(ValueError, match="1 missing"):
        unit_folds(np.array([1.0, np.nan, 2.0]), 2, 0)


def test_unit_role_is_checked_at_the_log_door(sim_df):
    with pytest.raises(SchemaError, match="'session'.*missing from the log"):
        InteractionLog(sim_df, **ROLES, unit="session")
    bad = sim_df.assign(session=np.where(np.arange(len(sim_df)) % 50 == 0, np.nan, 1.0))
    with pytest.raises(SchemaError, match="'session'.*120 missing values"):
        InteractionLog(bad, **ROLES, unit="session")
    with pytest.raises(SchemaError, match="two roles"):
        InteractionLog(sim_df, **ROLES, unit="hour")
    log = InteractionLog(sim_df, **ROLES, user="user_id", unit="user_id")  # user may be the unit
    assert log.roles["unit"] == ["user_id"]


# ---- every split keeps a unit on one side
@pytest.mark.parametrize("options", [dict(), dict(nuisance="per_item", n_repeats=2, n_folds=3)])
def test_outer_folds_keep_each_unit_on_one_side(sim_df, options):
    fit = _fit(sim_df, **options)
    est = _fit(sim_df, dict(ROLES, unit="user_id"), **options)
    assert _one_fold_per_unit(est.fold_, sim_df["user_id"])
    assert not _one_fold_per_unit(fit.fold_, sim_df["user_id"])  # row-level folds split users
    n_folds = options.get("n_folds", 2)
    np.testing.assert_array_equal(est.fold_, unit_folds(sim_df["user_id"], n_folds, 0))
    assert est.effects_.attrs["unit"] == "user_id" and (est.effects_["status"] == "ok").mean() > 0.7
    # the one-call door takes the same role
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        table = cr.estimate_item_effects(sim_df, **ROLES, unit="user_id", **options)
    pd.testing.assert_frame_equal(table, est.effects_)


def test_early_stopping_and_auto_hold_out_whole_units(sim_df, monkeypatch):
    """nuisance='auto' (its stack is scored on the outer folds' out-of-fold rows): every
    booster's early-stopping split keeps each user on one side. ``user_activity`` is one
    continuous value per user, so it identifies the user in the boosters' design rows."""
    from causalrec.nuisance.boosted import BoostedLearner
    assert sim_df.groupby("user_activity")["user_id"].nunique().max() == 1
    import causalrec.nuisance.crossfit as crossfit
    seen, fit_predict = [], BoostedLearner.fit_predict_offsets
    orders, content_order = [], crossfit.content_column_order

    def spy(self, X, y, offsets, X_test, offsets_test, *, validation, **kw):
        column = list(orders[-1]).index(design_column)  # the boosters' own column order
        seen.append((X[:, column].copy(), validation.copy()))
        return fit_predict(self, X, y, offsets, X_test, offsets_test, validation=validation, **kw)

    monkeypatch.setattr(BoostedLearner, "fit_predict_offsets", spy)
    monkeypatch.setattr(crossfit, "content_column_order",
                        lambda X: orders.append(content_order(X)) or orders[-1])
    design_column = list(_fit(sim_df, n_folds=1).design_columns_).index("user_activity")
    est = _fit(sim_df, dict(ROLES, unit="user_id"), nuisance="auto")
    assert seen and _one_fold_per_unit(est.fold_, sim_df["user_id"])
    for activity, validation in seen:
        assert validation.any() and (~validation).any()
        assert not set(activity[validation]) & set(activity[~validation])


# ---- names and order of the confounders do not matter
def test_renamed_or_reordered_confounders_give_identical_estimates(sim_df):
    base = _fit(sim_df)
    for new in ("zz_hour", "a_hour"):
        renamed = _fit(sim_df.rename(columns={"hour": new}),
                       dict(ROLES, confounders=["user_activity", new, "tenure"]))
        np.testing.assert_array_equal(renamed.fold_, base.fold_)
        pd.testing.assert_frame_equal(renamed.effects_, base.effects_)  # bit for bit
    # reordered: the same folds; the solver sums the columns in another order, so in float64
    # the estimates agree to rounding (1e-9 of an SE)
    base64 = _fit(sim_df, dtype="float64")
    reordered = _fit(sim_df, dict(ROLES, confounders=["tenure", "hour", "user_activity"],
                                  categorical=["user_group", "device"]), dtype="float64")
    np.testing.assert_array_equal(reordered.fold_, base64.fold_)
    np.testing.assert_array_equal(base64.fold_, base.fold_)
    a, b = base64.effects_, reordered.effects_
    assert ((a["ate"] - b["ate"]).abs() / a["se"]).max() < 1e-9


# ---- the warning for recurring unit-like ids
def test_recurring_unit_ids_without_unit_warn(sim_df):
    with pytest.warns(DataWarning, match="'user_id' looks like a unit id.*unit='user_id'"):
        cr.ItemEffectEstimator().fit(InteractionLog(sim_df, **ROLES))
    # an unnamed integer id column recurring across items: also suggested
    anon = sim_df.rename(columns={"user_id": "k"})
    with pytest.warns(DataWarning, match="'k' looks like a unit id"):
        cr.ItemEffectEstimator().fit(InteractionLog(anon, **ROLES))
    # with unit=, or with group labels (few values), row ids and measurements: no suggestion
    # (user_text, one text per user, would be one)
    quiet = sim_df.drop(columns=["user_id", "user_text"]).assign(row=np.arange(len(sim_df)),
                                                    score=np.random.default_rng(0).random(len(sim_df)))
    for df, roles in ((sim_df, dict(ROLES, unit="user_id")), (quiet, ROLES)):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            cr.ItemEffectEstimator().fit(InteractionLog(df, **roles))
        assert not [w for w in record if "looks like a unit id" in str(w.message)]


# ---- an item whose rows fill one fold: per_item's own models never see its rows out of fold
SOLO_ROLES = dict(item="item", treatment="t", outcome="y", confounders=["x1", "x2"])


def one_unit_item_log(rows=3000, solo=600, seed=0):
    """Items i0..i2 of ``rows`` rows from 500 recurring users (strong confounding by x1:
    naive differences ~0.37, effects ~0.1), and item "solo" whose ``solo`` rows all come
    from user 10000, so they share one fold in every split."""
    rng = np.random.default_rng(seed)
    item = np.r_[np.repeat(["i0", "i1", "i2"], rows), np.repeat("solo", solo)]
    n = len(item)
    x1, x2 = rng.normal(size=(2, n))
    t = (rng.random(n) < 1 / (1 + np.exp(-1.5 * x1))).astype(int)
    y = (rng.random(n) < 1 / (1 + np.exp(0.5 - 1.5 * x1 - 0.3 * x2 - 0.5 * t))).astype(int)
    return pd.DataFrame(dict(item=item, u=np.r_[rng.integers(500, size=3 * rows),
                                                 np.full(solo, 10_000)], t=t, y=y, x1=x1, x2=x2))


NO_NUMBER = ["ate", "se", "ci_low", "ci_high", "p_value", "split_sd"]


def test_per_item_item_from_one_unit_gets_too_few_units():
    # was: "solo"'s own models were fitted on none of its rows (all in the other fold), so
    # its "estimate" was its naive difference (0.345), with status "ok"
    df = one_unit_item_log()  # the largest item, 3,000 rows, is above the small-log gate
    est = _fit(df, dict(SOLO_ROLES, unit="u"), nuisance="per_item")
    assert est.plan_.tune_columns is None and est.n_repeats_ == 4
    eff = est.effects_.set_index("item")
    assert eff.loc["solo", "status"] == "too_few_units"
    assert eff.loc["solo", NO_NUMBER].isna().all() and eff.loc["solo", "converged"]
    assert eff.loc["solo", "n"] == 600 and np.isfinite(eff.loc["solo", "naive_ate"])
    # the other items: "ok", as fitted without "solo" (the design's standardising moments,
    # read from every fitted row, differ: 1e-4 SE)
    alone = _fit(df[df["item"] != "solo"], dict(SOLO_ROLES, unit="u"),
                 nuisance="per_item").effects_.set_index("item")
    others = eff.drop(index="solo")
    assert (others["status"] == "ok").all() and (alone["status"] == "ok").all()
    assert ((others["ate"] - alone["ate"]).abs() / alone["se"]).max() < 1e-3
    # given folds that put the item's rows in one fold: the same status (no unit role)
    given = cr.ItemEffectEstimator(nuisance="per_item").fit(
        InteractionLog(df, **SOLO_ROLES), folds=unit_folds(df["u"], 2, 0)).effects_
    assert given.set_index("item").loc["solo", "status"] == "too_few_units"
    # every consumer of statuses: summary counts, ranking (not ranked), the report's reason
    assert est.summary().status_counts["too_few_units"] == 1
    ranked = cr.rank_items(est.effects_).set_index("item")
    assert ranked.loc["solo", "rank_status"] == "status_not_ok" and np.isnan(ranked.loc["solo", "rank"])
    from causalrec.reporting import EffectReport
    assert "too few units" in EffectReport(est).to_html()


def test_too_few_units_only_where_per_item_predicts_out_of_fold():
    """pooled and flexible nuisances predict the item's rows from models the other items'
    rows inform (shared slopes and intercept; an own booster needs the item's rows in every
    fold): an adjusted estimate, "ok". per_item on a small log refits its models on every row
    (``refit_small_logs``): adjusted too; without the refit, cross-fitted: "too_few_units"."""
    df = one_unit_item_log()
    for nuisance in ("pooled", FlexibleNuisance("boosted", min_item_rows=50)):
        est = _fit(df, dict(SOLO_ROLES, unit="u"), nuisance=nuisance)
        solo = est.effects_.set_index("item").loc["solo"]
        assert solo["status"] == "ok"
        assert abs(solo["ate"] - solo["naive_ate"]) > 4 * solo["se"]  # adjusted: 0.05 vs 0.35
    small = one_unit_item_log(rows=600)  # 600 rows < 500 per column: tuned
    refit = _fit(small, dict(SOLO_ROLES, unit="u"), nuisance="per_item")
    assert refit.plan_.tune_columns is not None
    solo = refit.effects_.set_index("item").loc["solo"]
    assert solo["status"] == "ok" and abs(solo["ate"] - solo["naive_ate"]) > 4 * solo["se"]
    crossfit = _fit(small, dict(SOLO_ROLES, unit="u"), nuisance="per_item",
                    refit_small_logs=False).effects_.set_index("item")
    assert crossfit.loc["solo", "status"] == "too_few_units"
    assert (crossfit.drop(index="solo")["status"] == "ok").all()
    # one fold asks for no cross-fitting: every item is fitted on its own rows
    assert (_fit(df, dict(SOLO_ROLES, unit="u"), nuisance="per_item",
                 n_folds=1).effects_["status"] == "ok").all()


# ---- Spark computes the same unit folds on its executors
@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no Java runtime for Spark")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession
    return (SparkSession.builder.master("local[2,2]").appName("causalrec-tests")
            .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
            .getOrCreate())  # the session of tests/spark/test_spark.py when it runs in this process


def test_spark_with_unit_equals_local(sim_df, spark):
    from causalrec.spark import estimate_item_effects_spark
    df = sim_df.drop(columns=["user_text", "item_text"]).assign(
        row=np.arange(len(sim_df)), user=lambda d: "u" + d["user_id"].astype(str))
    local = _fit(df, dict(ROLES, item=["item_id"], unit="user"), dtype="float64", n_repeats=2)
    res = estimate_item_effects_spark(spark.createDataFrame(df), **ROLES, unit="user",
                                      dtype="float64", shards=2, row_id="row", row_outputs=True,
                                      n_repeats=2)
    pd.testing.assert_frame_equal(local.effects_, res.effects, check_exact=False, rtol=1e-8,
                                  check_dtype=False)
    rows = res.rows.toPandas().sort_values("row_id")
    np.testing.assert_array_equal(rows["fold"].to_numpy(), local.fold_.to_numpy())
    assert _one_fold_per_unit(rows["fold"], df["user"])


def test_spark_gives_an_item_of_one_unit_too_few_units_as_local(spark):
    # was: "ok" with the item's naive difference (the Spark path finishes with FitPlan.finish)
    from causalrec.spark import estimate_item_effects_spark
    df = one_unit_item_log()
    local = _fit(df, dict(SOLO_ROLES, item=["item"], unit="u"), nuisance="per_item",
                 dtype="float64")
    res = estimate_item_effects_spark(spark.createDataFrame(df), **SOLO_ROLES, unit="u",
                                      nuisance="per_item", dtype="float64", shards=2)
    assert res.effects.set_index("item").loc["solo", "status"] == "too_few_units"
    pd.testing.assert_frame_equal(local.effects_, res.effects, check_exact=False, rtol=1e-8,
                                  check_dtype=False)


def test_spark_refuses_a_split_in_one_fold_as_local(spark):
    # was: the Spark tasks drew the folds and nobody checked them: every fitted row in one
    # fold gave each item its naive difference as "ok"; now the local ValueError, from the
    # same check (the shards' fold counts summed on the driver)
    from causalrec.spark import estimate_item_effects_spark
    small = one_unit_item_log(rows=200, solo=0).assign(u=7, zero=0)
    sdf = spark.createDataFrame(small)
    for nuisance in ("per_item", "pooled"):
        with pytest.raises(ValueError, match="unit column 'u' puts every fitted row in fold"):
            estimate_item_effects_spark(sdf, **SOLO_ROLES, unit="u", nuisance=nuisance,
                                        refit_small_logs=False, shards=2)
        with pytest.raises(ValueError, match="the given folds put every fitted row in fold 0"):
            estimate_item_effects_spark(sdf, **SOLO_ROLES, folds="zero", nuisance=nuisance)


# ---- seeds: the default repeats (4 splits on this log) keep estimates and the top put
def test_changing_the_seed_moves_estimates_a_fraction_of_an_se():
    """simulate_log(n_items=30, n_rows=40_000, popularity_skew=0.5, seed=0), seeds 0, 1, 2
    (3 pairs, 90 item moves, in units of the smaller SE). One split per fit: median 0.27,
    90th percentile 0.72, max 1.55. The default's 4 splits: median 0.09, 90th percentile
    0.24, max 0.45, top 10 kept whole (issue 28). The reported split_sd is ~0.24 SE per
    split, so the mean of 4 moves with sd ~ sqrt(2) * 0.24 / 2 = 0.17 SE between two seeds:
    asserted median <= 0.12 (0.674 sd) and 90th percentile <= 0.3 (1.645 sd, rounded up),
    every pair's top 10 sharing >= 8 items, split_sd > 0 on every estimated item."""
    sim = cr.datasets.simulate_log(n_items=30, n_rows=40_000, popularity_skew=0.5, seed=0)
    fits = [_fit(sim.data, seed=s).effects_ for s in (0, 1, 2)]
    moves, kept = [], []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        a, b = fits[i], fits[j]
        ok = (a["status"] == "ok") & (b["status"] == "ok")
        assert ok.mean() > 0.9
        moves.append(((a["ate"] - b["ate"]).abs() / np.minimum(a["se"], b["se"]))[ok])
        top = lambda t: set(t[ok].nlargest(10, "ate")["item"])
        kept.append(len(top(a) & top(b)))
    moves = pd.concat(moves)
    assert moves.median() <= 0.12 and moves.quantile(0.9) <= 0.3, moves.describe()
    assert min(kept) >= 8, kept
    assert (fits[0].loc[fits[0]["status"] == "ok", "split_sd"] > 0).all()
