"""The log door's contract as a property (issue 26): a messy log (extension dtypes, NaN
patterns, mixed key types, repeated labels, extreme magnitudes, empty or bad items, unicode)
either raises a documented error (``SchemaError`` / ``ValueError``) or gives a table whose
"ok" rows equal those of the clean log and whose other rows carry a status; the caller's
frame is never modified.

CI runs a fixed, derandomised budget (well under a minute). For a longer search set
``CAUSALREC_HYPOTHESIS=thorough`` (400 examples per test), e.g.
``CAUSALREC_HYPOTHESIS=thorough pytest tests/schema/test_bad_input_property.py``.
"""
import functools
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bad_input import ROLES, small_log

import causalrec as cr
from causalrec.exceptions import DataWarning
from causalrec.schema import SchemaError

settings.register_profile("ci", max_examples=30, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("thorough", max_examples=int(os.environ.get("CAUSALREC_HYPOTHESIS_EXAMPLES", 400)), derandomize=False, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
PROFILE = os.environ.get("CAUSALREC_HYPOTHESIS", "ci")
SEEDS = (0, 1, 2)
OPTIONS = dict(nuisance="per_item", dtype="float64")  # per-item fits: exact equality holds


def fit(df):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return cr.estimate_item_effects(df, **ROLES, **OPTIONS)


@functools.lru_cache(maxsize=None)
def clean(seed):
    df = small_log(seed, n_items=3)
    return df, fit(df).set_index("item")


# ---------------------------------------------------------------- harmless messes
def extension_dtypes(df, draw):
    """Same values, other dtypes: nullable numbers, categories, pandas / Arrow strings."""
    casts = {"t": ["Int64", "int8", "boolean", "float32"], "y": ["Int64", "Float64", "float64"],
             "x1": ["Float64", "float64"], "x2": ["Float64"],
             "item": ["category", "string", "object"], "c": ["category", "string", "object"]}
    for column in draw(st.lists(st.sampled_from(sorted(casts)), unique=True, max_size=4)):
        df[column] = df[column].astype(draw(st.sampled_from(casts[column])))
    return df


def junk_columns(df, draw):
    """Columns outside the roles: NaN, inf, extreme magnitudes, mixed types, unicode names."""
    n = len(df)
    junk = {"all_nan": np.full(n, np.nan), "huge": np.full(n, 1e308), "tiny": np.full(n, 5e-324),
            "inf": np.r_[np.inf, np.zeros(n - 1)], "mixed": [1, "1"] * (n // 2) + [None] * (n % 2),
            "émoji 🎉": ["ü"] * n, "nullable": pd.array([pd.NA] * n, dtype="Int64")}
    for name in draw(st.lists(st.sampled_from(sorted(junk)), unique=True, max_size=3)):
        df[name] = junk[name]
    return df


def repeated_index(df, draw):
    """Index labels that repeat (rows are positions, labels are the caller's)."""
    return df.set_axis(np.arange(len(df)) % draw(st.integers(1, 5)), axis=0)


def reorder_columns(df, draw):
    return df[list(draw(st.permutations(list(df.columns))))]


def unused_categories(df, draw):
    """Categorical keys with levels no row holds (empty items, empty categories)."""
    for column in draw(st.lists(st.sampled_from(["item", "c"]), unique=True, min_size=1)):
        levels = list(pd.unique(df[column].astype(str))) + ["zz_unused", "ø ∅"]
        df[column] = pd.Categorical(df[column].astype(str), categories=levels)
    return df


HARMLESS = {"extension_dtypes": extension_dtypes, "junk_columns": junk_columns,
            "repeated_index": repeated_index, "reorder_columns": reorder_columns,
            "unused_categories": unused_categories}


def bad_item(df, draw):
    """An item that cannot be estimated: a unicode label, few rows, extreme confounders."""
    size = draw(st.integers(1, 6))
    rows = df.iloc[:size].copy()
    rows["item"] = draw(st.sampled_from(["zz ünïcødé ☃", "zz_empty", "zz 名前"]))
    rows["x1"] = draw(st.sampled_from([0.0, -1e6, 1e12]))
    rows["t"] = draw(st.sampled_from([0, 1]))
    return pd.concat([df, rows])


# ---------------------------------------------------------------- messes that must raise
def set_cell(df, position, column, value):
    """One cell by position (index labels may repeat)."""
    df.iloc[position, df.columns.get_loc(column)] = value


def missing_value(df, draw):
    column = draw(st.sampled_from(["item", "t", "y", "x1", "x2"]))
    dtype = {"t": "Int64", "item": "object"}.get(column, draw(st.sampled_from(["float64", "Float64"])))
    df[column] = df[column].astype(dtype)
    set_cell(df, draw(st.integers(0, len(df) - 1)), column, None)
    return df


def infinite_value(df, draw):
    column = draw(st.sampled_from(["y", "x1", "x2"]))
    df[column] = df[column].astype(float)
    set_cell(df, draw(st.integers(0, len(df) - 1)), column, draw(st.sampled_from([np.inf, -np.inf])))
    return df


def mixed_keys(df, draw):
    column = draw(st.sampled_from(["item", "c"]))
    df[column] = df[column].astype(object)
    set_cell(df, draw(st.integers(0, len(df) - 1)), column, draw(st.sampled_from([1, 2.5, True, b"i0"])))
    return df


def repeated_role_column(df, draw):
    column = draw(st.sampled_from(["item", "t", "y", "x1", "c"]))
    return pd.concat([df, df[[column]]], axis=1)


def non_binary_treatment(df, draw):
    df["t"] = df["t"].astype("Int64")  # a boolean column cannot hold 2
    set_cell(df, draw(st.integers(0, len(df) - 1)), "t", draw(st.sampled_from([2, -1])))
    return df


def text_in_numbers(df, draw):
    column = draw(st.sampled_from(["y", "x1"]))
    df[column] = df[column].astype(object)
    set_cell(df, 0, column, "1.5")
    return df


RAISING = {"missing_value": missing_value, "infinite_value": infinite_value,
           "mixed_keys": mixed_keys, "repeated_role_column": repeated_role_column,
           "non_binary_treatment": non_binary_treatment, "text_in_numbers": text_in_numbers}


@st.composite
def messy_logs(draw):
    seed = draw(st.sampled_from(SEEDS))
    df = clean(seed)[0].copy()
    harmless = draw(st.lists(st.sampled_from(sorted(HARMLESS)), unique=True, max_size=3))
    add_bad = draw(st.booleans())
    raising = draw(st.lists(st.sampled_from(sorted(RAISING)), unique=True, max_size=1))
    if add_bad:
        df = bad_item(df, draw)
    for name in harmless:
        df = HARMLESS[name](df, draw)
    for name in raising:
        df = RAISING[name](df, draw)
    return seed, df, bool(raising), add_bad


@settings(settings.get_profile(PROFILE))
@given(case=messy_logs())
def test_messy_log_gives_a_documented_error_or_the_clean_ok_rows(case):
    seed, df, must_raise, add_bad = case
    before = df.copy(deep=True)
    if must_raise:
        with pytest.raises((SchemaError, ValueError)):
            fit(df)
    else:
        got = fit(df).set_index("item")
        base = clean(seed)[1]
        good = base.index
        np.testing.assert_array_equal(got.loc[good, "status"], base["status"])
        ok = good[base["status"] == "ok"]
        np.testing.assert_allclose(got.loc[ok, ["ate", "se", "ci_low", "ci_high"]],
                                   base.loc[ok, ["ate", "se", "ci_low", "ci_high"]], rtol=1e-9, atol=0)
        others = got.index.difference(good)
        assert len(others) <= int(add_bad) + 2  # the bad item, unused levels (if reported)
        assert (got.loc[others, "status"] != "ok").all() and got.loc[others, "ate"].isna().all()
    pd.testing.assert_frame_equal(df, before, check_exact=True)  # never written to


# ---------------------------------------------------------------- the bandit door
def bandit_log(seed, n=600, n_items=4):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"item": rng.choice([f"i{k}" for k in range(n_items)], n),
                         "y": (rng.random(n) < 0.3).astype(int), "p": np.full(n, 1 / n_items)})


def bandit_values(df, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return cr.estimate_item_values(df, item="item", outcome="y", propensity="p",
                                       method=method).set_index("item")


@st.composite
def messy_bandit_logs(draw):
    seed = draw(st.sampled_from(SEEDS))
    df = bandit_log(seed)
    extreme = draw(st.sampled_from([None, 1e-300, 1e-9, 1e-4]))
    if extreme is not None:  # an extra item shown once with an extreme logged propensity
        df = pd.concat([df, pd.DataFrame({"item": ["zz ☃"], "y": [1], "p": [extreme]})])
    if draw(st.booleans()):
        df = df.astype({"y": draw(st.sampled_from(["Int64", "Float64", "float32"])),
                        "p": draw(st.sampled_from(["Float64", "float64"])),
                        "item": draw(st.sampled_from(["category", "string", "object"]))})
    if draw(st.booleans()):
        df = repeated_index(df, draw)
    raising = draw(st.sampled_from([None, "zero", "above_one", "nan", "mixed"]))
    row = df.index[draw(st.integers(0, len(df) - 2))]
    if raising in ("zero", "above_one", "nan"):
        df["p"] = df["p"].astype(float)
        df.loc[row, "p"] = {"zero": 0.0, "above_one": 1.5, "nan": np.nan}[raising]
    elif raising == "mixed":
        df["item"] = df["item"].astype(object)
        df.iloc[0, df.columns.get_loc("item")] = 0
    return seed, df, raising is not None, extreme is not None, draw(st.sampled_from(["ipw", "snipw"]))


@settings(settings.get_profile(PROFILE))
@given(case=messy_bandit_logs())
def test_messy_bandit_log_gives_a_documented_error_or_unmoved_items(case):
    seed, df, must_raise, extra, method = case
    before = df.copy(deep=True)
    if must_raise:
        with pytest.raises((SchemaError, ValueError)):
            bandit_values(df, method)
    else:
        got, base = bandit_values(df, method), bandit_values(bandit_log(seed), method)
        n_ratio = len(bandit_log(seed)) / len(df)  # ipw divides by all rows, the extra one too
        scale = n_ratio if method == "ipw" else 1.0
        np.testing.assert_allclose(got.loc[base.index, "value"], base["value"] * scale, rtol=1e-12)
        np.testing.assert_array_equal(got.loc[base.index, "status"], base["status"])
        if extra:  # one row: never ok, never a reference for the others' lifts
            row = got.loc["zz ☃"]
            assert row["status"] != "ok" and not row["lift_reference"]
            assert row["value"] <= 1 + 1e-12  # weight capped at the row count: y * n / n
    pd.testing.assert_frame_equal(df, before, check_exact=True)
