"""Labels that collide or mix, and frame shapes pandas allows (issue 26, classes 4 and 5):
one rule in the log door (``InteractionLog``) for every entry point. Key columns (items,
segments, categories, groups, users, providers) holding mixed types such as 1 and "1" are a
``SchemaError`` naming the column; repeated or MultiIndex column labels and non-text role
names are refused by name; nothing is written and the caller's frame is untouched."""
import warnings

import numpy as np
import pandas as pd
import pytest
from test_bad_input import ROLES, fit, small_log

import causalrec as cr
from causalrec.bandit import estimate_item_values
from causalrec.exceptions import DataWarning
from causalrec.schema import InteractionLog, SchemaError

MIXES = [[1, "1"], ["a", 2], [True, "x"], [1.5, "1.5"], [b"i0", "i0"]]


def with_labels(df, column, labels):
    out = df.copy()
    out[column] = out[column].astype(object)
    out.loc[out.index[:len(labels)], column] = labels
    return out


@pytest.mark.parametrize("labels", MIXES)
@pytest.mark.parametrize("column", ["item", "c"])
def test_mixed_key_types_are_a_schema_error_naming_the_column(labels, column):
    df = with_labels(small_log(0), column, labels)
    before = df.copy(deep=True)
    with pytest.raises(SchemaError, match=f"column '{column}': mixes value types"):
        fit(df)
    pd.testing.assert_frame_equal(df, before)


def test_one_kind_of_key_passes_and_numbers_of_two_types_are_one_kind():
    df = small_log(1)
    ints = fit(df.assign(item=df["item"].str[1:].astype(int)))
    mixed_numbers = df.assign(item=df["item"].str[1:].astype(int).astype(object))
    mixed_numbers.loc[mixed_numbers.index[:3], "item"] = 0.0  # 0 and 0.0 are one number
    assert fit(mixed_numbers)["item"].tolist() == ints["item"].tolist()
    as_text = fit(df.assign(item=df["item"].astype("category")))
    assert (as_text["status"] == fit(df)["status"]).all()


def test_categorical_dtype_with_mixed_categories_is_refused():
    df = small_log(2)
    df["item"] = pd.Categorical([1 if i < 5 else "1" for i in range(len(df))])
    with pytest.raises(SchemaError, match="column 'item': mixes value types: 1 \\(int\\), '1' \\(str\\)"):
        fit(df)


def test_segment_and_user_keys_follow_the_same_rule():
    df = with_labels(small_log(3).assign(region="north"), "region", [1])
    with pytest.raises(SchemaError, match="column 'region': mixes"):
        fit(df, by="region")
    df = with_labels(small_log(3).assign(user=5), "user", ["u5"])
    with pytest.raises(SchemaError, match="column 'user': mixes"):
        InteractionLog(df, **ROLES, user="user")


def test_audit_refuses_mixed_groups_items_and_providers_before_fitting():
    sim = cr.datasets.simulate_log(n_items=6, n_rows=2000, seed=0)
    roles = dict(item="item_id", treatment="recommended", outcome="clicked",
                 confounders=["user_activity", "hour", "tenure"], categorical=["device"])
    for column in ("user_group", "item_id", "item_provider"):
        other = 0 if isinstance(sim.data[column].iloc[0], str) else "0"  # the other kind
        df = with_labels(sim.data, column, [other])
        with pytest.raises(SchemaError, match=f"column '{column}': mixes value types"):
            cr.FairnessAudit(**roles, group="user_group", provider="item_provider").fit(df)


def test_bandit_values_refuse_mixed_items_and_positions():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"item": rng.integers(0, 4, 400), "y": rng.integers(0, 2, 400),
                       "p": 0.25, "pos": rng.integers(1, 3, 400)})
    for column in ("item", "pos"):
        bad = with_labels(df, column, ["1"])
        with pytest.raises(SchemaError, match=f"column '{column}': mixes value types"):
            estimate_item_values(bad, item="item", outcome="y", propensity="p", position="pos",
                                 method="ipw")


@pytest.mark.parametrize("column", ["item", "t", "y", "x1", "c"])
def test_a_repeated_role_column_is_an_error_naming_it(column):
    df = small_log(4)
    doubled = pd.concat([df, df[[column]]], axis=1)
    with pytest.raises(SchemaError, match=f"column '{column}': appears 2 times among the columns"):
        fit(doubled)


def test_a_repeated_column_outside_the_roles_is_harmless():
    df = small_log(5).assign(extra=1.0)
    doubled = pd.concat([df, df[["extra"]]], axis=1)
    pd.testing.assert_frame_equal(fit(doubled), fit(df))


def test_multiindex_columns_and_non_text_role_names_are_refused_by_name():
    df = small_log(6)
    multi = df.copy()
    multi.columns = pd.MultiIndex.from_product([["log"], df.columns])
    with pytest.raises(SchemaError, match="the log has MultiIndex columns"):
        fit(multi)
    numbered = df.set_axis(range(df.shape[1]), axis=1)
    with pytest.raises(SchemaError, match="role 'item' expects column names as text, got 0"):
        InteractionLog(numbered, item=0, treatment=1, outcome=2)


def test_report_never_starts_on_a_log_with_mixed_ids(tmp_path):
    df = with_labels(small_log(7), "item", [1, "1"])
    with pytest.raises(SchemaError, match="column 'item'"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            est = cr.ItemEffectEstimator().fit(InteractionLog(df, **ROLES))
            cr.EffectReport(est).save(tmp_path / "report")
    assert not any(tmp_path.iterdir())
