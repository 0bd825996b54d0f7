"""Unusual but plausible columns from a real log (sweep 38): names that collide with the
design's derived columns, dtypes pandas calls numeric or not, treatments coded as text.
Each gives the clean-dtype numbers or a SchemaError naming the column and the fix."""
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_bad_input import ROLES, small_log

import causalrec as cr
from causalrec.estimate.design import DesignSpec
from causalrec.exceptions import DataWarning



def effects(df, roles=ROLES, **log_options):
    log = cr.InteractionLog(df, **roles, **log_options)
    folds = np.arange(len(df)) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return cr.ItemEffectEstimator(n_repeats=1).fit(log, folds=folds).effects_


@pytest.mark.parametrize("missing", ["error", "indicator"])
def test_a_confounder_named_like_a_derived_design_column_is_refused(missing):
    # was: the design found its columns by name, so the confounder took the values of the
    # one-hot column c=b (or of x1's missing indicator) and the fit ran on the wrong data
    df = small_log(0)
    if missing == "indicator":
        df.loc[::5, "x1"] = np.nan
        name = "x1=__missing__"
    else:  # a level's one-hot column (the reference level has none)
        name = f"c={DesignSpec.from_log(cr.InteractionLog(df, **ROLES)).categorical['c'][1]}"
    renamed = df.rename(columns={"x2": name})
    roles = dict(ROLES, confounders=["x1", name])
    with pytest.raises(cr.SchemaError, match=f"column '{name}': is the name of two design "
                       "columns.*rename the confounder"):
        effects(renamed, roles, missing=missing)
    # another name keeps the confounder's own column: the clean design, renamed
    log = cr.InteractionLog(df.rename(columns={"x2": "c b"}),
                            **dict(ROLES, confounders=["x1", "c b"]), missing=missing)
    spec, clean = (DesignSpec.from_log(one, warn=False)
                   for one in (log, cr.InteractionLog(df, **ROLES, missing=missing)))
    assert spec.columns == [c.replace("x2", "c b") for c in clean.columns]
    assert np.array_equal(spec.center, clean.center) and np.array_equal(spec.scale, clean.scale)


def _datetimes(s):
    return pd.Timestamp("2024-01-01") + pd.to_timedelta(s * 1000, unit="s")


@pytest.mark.parametrize("column, convert, fix", [
    ("t", lambda s: s.map({1: "yes", 0: "no"}), r"values 'no', 'yes'\); code it as 0/1"),
    ("t", lambda s: s.astype(bool).astype(object), r"values False, True\); code it as 0/1"),
    ("t", lambda s: 2 * s - 1, r"found values -1, 1; code it as 0/1"),
    ("y", lambda s: s.astype(str), r"got dtype str; .*df\[col\] = pd.to_numeric\(df\[col\]\)"),
    ("x1", lambda s: s.astype(object), r"dtype object; .*pd.to_numeric"),
    ("x1", lambda s: s.astype(object).where(s.index != 3, "n/a"),
     r"holds 1 values that are not numbers, e.g. 'n/a' \(row 3\)"),
    ("x1", _datetimes, r"datetime64\[ns\]; encode the times as numbers"),
    ("x1", lambda s: _datetimes(s) - _datetimes(s).min(), r"dt.total_seconds\(\)"),
    ("x2", lambda s: s.round().astype("category"), r"categorical confounder goes in categorical="),
])
def test_a_column_of_the_wrong_kind_names_it_and_the_conversion(column, convert, fix):
    # was: "must be numeric, got dtype object" / "treatment must be binary 0/1, got dtype
    # str", with no word on what the column holds or how to convert it
    df = small_log(0)
    df[column] = convert(df[column])
    with pytest.raises(cr.SchemaError, match=f"column '{column}': .*{fix}"):
        cr.InteractionLog(df, **ROLES)


def test_a_column_listed_twice_in_one_role_says_so():
    with pytest.raises(cr.SchemaError, match="column 'x1': listed twice in 'confounders'"):
        cr.InteractionLog(small_log(0), **dict(ROLES, confounders=["x1", "x2", "x1"]))


def test_an_audit_by_a_boolean_group_column_runs_and_matches_text_labels():
    # was: IndexError deep in pandas: the exposure table's .loc[[True], ...] read the list
    # of shifted groups as a row mask
    df = small_log(0, n_items=1, rows=(180, 181))
    is_new = np.arange(len(df)) % 3 == 0
    roles = dict(ROLES, group="g")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        flags = cr.FairnessAudit(**roles, estimator=cr.ItemEffectEstimator(n_repeats=1)).fit(df.assign(g=is_new)).exposure_
        text = cr.FairnessAudit(**roles, estimator=cr.ItemEffectEstimator(n_repeats=1)).fit(df.assign(g=np.where(is_new, "T", "F"))).exposure_
    assert flags["group"].tolist() == [False, True]
    numbers = text.columns.drop(["group", "status"])
    pd.testing.assert_frame_equal(flags[numbers], text[numbers])
    assert np.isfinite(flags.loc[1, "logit_shift"]) and flags.loc[0, "logit_shift"] == 0


def test_a_table_that_is_not_pandas_is_named_in_full_with_its_conversion():
    # was: "expected a pandas DataFrame, got Table" (a polars frame: "got DataFrame")
    df = small_log(0)
    with pytest.raises(cr.SchemaError, match=r"got pyarrow\.lib\.Table; convert it with "
                       r"\.to_pandas\(\)"):
        cr.InteractionLog(pa.Table.from_pandas(df), **ROLES)
    with pytest.raises(cr.SchemaError, match=r"got dict; make it one, e\.g\. pd\.DataFrame"):
        cr.estimate_item_values(df.to_dict("list"), item="item", outcome="y", propensity="x1")


def test_propensities_logged_as_percentages_say_so():
    df = small_log(0).assign(p=50.0)
    with pytest.raises(cr.SchemaError, match=r"column 'p': \d+ logged propensities outside "
                       r"\(0, 1\], e.g. 50; they look like percentages: divide the column by 100"):
        cr.InteractionLog(df, **ROLES, propensity="p")
    with pytest.raises(cr.SchemaError, match=r"outside \(0, 1\], e.g. -0.5$"):
        cr.InteractionLog(df.assign(p=-0.5), **ROLES, propensity="p")


def test_renaming_a_categorical_level_leaves_the_effects_alone():
    # was: the reference level was the first label in sorted order, so renaming a rare,
    # strongly confounding level "r" to "a" made it the reference and moved effects by up
    # to 0.23 SE (the one-hot columns are penalised)
    rng = np.random.default_rng(3)
    n = 1000
    level = rng.choice(["m", "n", "o", "r"], size=n, p=[0.33, 0.33, 0.32, 0.02])
    z = pd.Series(level).map({"m": 0.0, "n": 0.3, "o": -0.3, "r": 2.5}).to_numpy()
    x1 = rng.normal(size=n)
    t = (rng.random(n) < 1 / (1 + np.exp(-(z + 0.5 * x1)))).astype(int)
    df = pd.DataFrame({"item": np.repeat(["i0", "i1"], n // 2), "t": t,
                       "y": z + 0.5 * x1 + 0.3 * t + rng.normal(size=n), "x1": x1,
                       "x2": rng.normal(size=n), "c": level})
    renamed = df.assign(c=df["c"].replace({"r": "a"}))
    spec = DesignSpec.from_log(cr.InteractionLog(renamed, **ROLES), warn=False)
    assert spec.categorical["c"] == ["n", "a", "m", "o"]  # the most frequent first
    before, after = effects(df), effects(renamed)
    np.testing.assert_allclose(after["ate"], before["ate"], rtol=0, atol=1e-5 * before["se"].min())
