"""Bad frames given to a fitted UpliftModel (issue 26, classes 3, 5 and 7): unseen category
levels and missing values follow the documented ``unknown_levels`` policy, frame shapes that
pandas allows (repeated index labels or columns, MultiIndex columns) are handled or refused by
name, and ``recommend(k=True)`` is a one-line error."""
import numpy as np
import pandas as pd
import pytest

import causalrec as cr
from causalrec.exceptions import DataWarning
from causalrec.schema import SchemaError

FEATURES = ["user_activity", "tenure"]
ROLES = dict(item="item_id", treatment="recommended", outcome="clicked",
             confounders=["user_activity", "hour", "tenure"], categorical=["device"])

pytestmark = pytest.mark.filterwarnings("ignore:.*rows repeat another row:causalrec.exceptions.DataWarning")


@pytest.fixture(scope="module")
def fitted():
    sim = cr.datasets.simulate_log(n_items=6, n_users=300, n_rows=4000, text_confounding=0.0, seed=2)
    log = cr.InteractionLog(sim.data, **ROLES)
    model = cr.UpliftModel(features=FEATURES, categorical=["device"], n_bootstrap=0, seed=0,
                           device="cpu").fit(log)
    users = sim.data.iloc[:40].reset_index(drop=True)
    return model, users


@pytest.mark.parametrize("level", ["smart-tv", None, np.nan, "DESKTOP"])
def test_unseen_level_or_missing_value_is_an_error_naming_column_and_level(fitted, level):
    model, users = fitted
    odd = users.assign(device=users["device"].astype(object))
    odd.loc[[3, 7], "device"] = level
    shown = "'<missing>'" if pd.isna(level) else repr(level)
    for call in (model.effect, model.effect_matrix, model.recommend, model.effect_interval):
        with pytest.raises(SchemaError, match=f"column 'device': 2 rows hold level.*{shown}"):
            call(odd)


def test_unknown_levels_reference_scores_them_as_the_reference_level_with_a_count(fitted):
    model, users = fitted
    lenient = cr.UpliftModel(**{**model.get_params(), "unknown_levels": "reference"})
    assert lenient.unknown_levels == "reference"
    model.encoder_.unknown_levels = "reference"  # the fitted model with the other policy
    try:
        odd = users.assign(device=users["device"].astype(object))
        odd.loc[[1, 2, 5], "device"] = ["smart-tv", None, "smart-tv"]
        with pytest.warns(DataWarning, match="column 'device': 3 rows hold level"):
            got = model.effect(odd)
        reference = model.encoder_.levels_["device"][0]
        expected = model.effect(odd.assign(device=odd["device"].where(
            ~odd.index.isin([1, 2, 5]), reference)))
        pd.testing.assert_series_equal(got, expected)
    finally:
        model.encoder_.unknown_levels = "error"
    with pytest.raises(ValueError, match="unknown_levels"):
        cr.UpliftModel(features=FEATURES, unknown_levels="ignore")._check_params()


def test_level_seen_in_training_but_pooled_is_not_unknown(fitted):
    model, users = fitted
    seen = model.encoder_.seen_levels_["device"]
    assert set(model.encoder_.levels_["device"]) <= set(seen)
    model.effect(users)  # every training level scores without a warning or an error


def test_recommend_with_repeated_index_labels_is_refused_and_effect_keeps_positions(fitted):
    model, users = fitted
    repeated = users.set_index(pd.Index([0, 1] * (len(users) // 2)))
    with pytest.raises(SchemaError, match="users: index labels repeat"):
        model.recommend(repeated, k=2)
    # per-row results follow row positions, whatever the labels
    np.testing.assert_array_equal(model.effect(repeated).to_numpy(), model.effect(users).to_numpy())
    recs = model.recommend(repeated.reset_index(drop=True), k=2)
    pd.testing.assert_frame_equal(recs, model.recommend(users, k=2))


@pytest.mark.parametrize("column", ["tenure", "device", "item_id"])
def test_repeated_column_is_an_error_naming_it(fitted, column):
    model, users = fitted
    doubled = pd.concat([users, users[[column]]], axis=1)
    with pytest.raises(SchemaError, match=f"column '{column}': appears 2 times"):
        model.effect(doubled)


def test_multiindex_and_non_frame_users_are_refused_by_name(fitted):
    model, users = fitted
    multi = users.copy()
    multi.columns = pd.MultiIndex.from_product([["u"], users.columns])
    with pytest.raises(SchemaError, match="users has MultiIndex columns"):
        model.recommend(multi)
    with pytest.raises(SchemaError, match=r"users: expected a pandas DataFrame, got "
                       r"numpy\.ndarray; make it one"):
        model.recommend(users.to_numpy())


def test_mixed_category_types_in_users_are_refused(fitted):
    model, users = fitted
    mixed = users.assign(device=users["device"].astype(object))
    mixed.loc[0, "device"] = 1
    with pytest.raises(SchemaError, match="column 'device': mixes value types"):
        model.effect_matrix(mixed)


@pytest.mark.parametrize("k", [True, False, 2.0, "3", 0, -1, None])
def test_recommend_k_must_be_a_positive_integer_not_a_bool(fitted, k):
    model, users = fitted
    with pytest.raises(ValueError, match=f"k must be a positive integer, got {k!r}"):
        model.recommend(users, k=k)
    assert len(model.recommend(users, k=np.int64(2))) == 2 * len(users)


def test_missing_indicator_log_fills_features_as_the_design_fixed_at_fit():
    """A log with missing tenure (a confounder and a feature) and missing="indicator": the
    features take the design's fill (the median of the observed training values) and 0/1
    indicator, fixed at fit and reused at prediction; the model equals the one fitted on
    the log filled by hand with the indicator as a column of its own (unit folds: the
    folds do not read the confounders). A missing feature under the default policy is an
    error naming the option."""
    from causalrec.estimate.missing_values import indicator_name
    sim = cr.datasets.simulate_log(n_items=6, n_users=300, n_rows=4000, text_confounding=0.0,
                                   seed=2)
    data = sim.data.assign(tenure=sim.data["tenure"].mask(np.arange(len(sim.data)) % 6 == 0))
    roles = dict(ROLES, unit="user_id")
    options = dict(categorical=["device"], n_bootstrap=0, seed=0, device="cpu", dtype="float64")
    model = cr.UpliftModel(features=FEATURES, **options).fit(
        cr.InteractionLog(data, **roles, missing="indicator"))
    flag = indicator_name("tenure")
    fill = data["tenure"].median()
    assert model.encoder_.missing_.fill == {"user_activity": data["user_activity"].median(),
                                            "tenure": fill}
    assert model.encoder_.missing_.indicators == ["tenure"] and flag in model.encoder_.columns_
    by_hand = data.assign(tenure=data["tenure"].fillna(fill), **{flag: data["tenure"].isna() * 1.0})
    confounders = ["user_activity", "hour", "tenure", flag]
    expected = cr.UpliftModel(features=["user_activity", "tenure", flag], **options).fit(
        cr.InteractionLog(by_hand, **{**roles, "confounders": confounders}))
    np.testing.assert_allclose(model.coef_matrix_.numpy(), expected.coef_matrix_.numpy(),
                               rtol=1e-8, atol=1e-12)
    users = data.iloc[:60].reset_index(drop=True)
    users_by_hand = by_hand.iloc[:60].reset_index(drop=True)
    np.testing.assert_allclose(model.effect(users), expected.effect(users_by_hand), rtol=1e-8)
    # a users frame's own missing values take the fit's fill, not their own median
    odd = users.assign(user_activity=np.nan)
    np.testing.assert_allclose(model.effect(odd), expected.effect(
        users_by_hand.assign(user_activity=data["user_activity"].median())), rtol=1e-8)
    with pytest.raises(SchemaError, match="column 'hour'.*pass missing='indicator'"):
        cr.UpliftModel(features=["hour"], **options).fit(cr.InteractionLog(
            sim.data.assign(hour=sim.data["hour"].mask(sim.data.index % 9 == 0)),
            **{**ROLES, "confounders": ["user_activity", "tenure"]}))


def test_a_categorical_features_reference_is_its_most_frequent_level_whatever_its_name():
    """The reference (the penalised coefficients' baseline, and where unseen levels score)
    is the most frequent level, ties by label, as in the estimator's design: renaming the
    rarest level to sort first, or shuffling the rows, encodes the same matrix (its columns
    renamed); it was the first label in sorted order."""
    from causalrec.uplift.features import UserFeatures
    rng = np.random.default_rng(0)
    device = rng.choice(["phone", "desktop", "tablet", "tv"], size=400, p=[0.5, 0.25, 0.15, 0.1])
    frame = pd.DataFrame({"x": rng.normal(size=400), "device": device})
    renamed = frame.assign(device=frame["device"].replace({"tv": "a_tv"}))
    shuffled = frame.sample(frac=1.0, random_state=1)
    encoders = [UserFeatures(features=["x"], categorical=["device"]) for _ in range(3)]
    plain, other, mixed = (enc.fit_transform(f)
                           for enc, f in zip(encoders, (frame, renamed, shuffled)))
    assert encoders[0].levels_["device"] == ["phone", "desktop", "tablet", "tv"]
    assert encoders[1].levels_["device"] == ["phone", "a_tv", "desktop", "tablet"]
    assert encoders[2].levels_["device"] == encoders[0].levels_["device"]
    order = [encoders[1].columns_.index(c.replace("device=tv", "device=a_tv"))
             for c in encoders[0].columns_]
    np.testing.assert_allclose(other[:, order], plain, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mixed, plain[shuffled.index.to_numpy()], rtol=1e-12, atol=1e-12)
    tie = UserFeatures(categorical=["g"])
    tie.fit_levels({"g": pd.Series({"b": 5, "a": 5, "c": 1})})
    assert tie.levels_["g"] == ["a", "b", "c"]
