"""The design spec (moments, dropped columns, categorical levels) and the cross-fitting
folds: what the fitted rows see, robust moments, canonical content, duplicates, cost."""
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

import torch

import causalrec as cr
import causalrec.estimate.design as design_module
import causalrec.estimate.design_rows as design_rows
from causalrec.estimate.design import DesignSpec, build_design
from causalrec.estimate.nuisance import cross_fit
from causalrec.glm import SegmentGLM
from causalrec.glm import layout as glm_layout
from causalrec.estimate.folds import MAX_FOLDS, assign_folds
from causalrec.exceptions import DataWarning

ROLES = dict(item="item_id", treatment="recommended", outcome="clicked",
             confounders=["user_activity", "hour", "tenure"], categorical=["device", "user_group"])


@pytest.fixture(scope="module")
def sim_df():
    sim = cr.datasets.simulate_log(n_items=30, n_users=1500, n_rows=12_000, seed=1)
    return sim.data.drop(columns=sim.roles["text"])


def _fit(df, roles=ROLES, **options):
    options = dict(dict(nuisance="per_item", dtype="float64"), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the log has a few duplicate rows
        return cr.ItemEffectEstimator(**options).fit(cr.InteractionLog(df, **roles))


def _one_row_item(df, item=999_999, **values):  # sorts after every item of the log
    row = df.iloc[[0]].assign(item_id=item, **values)
    return pd.concat([df, row], ignore_index=True)


# -- item 3: rows that are not estimated do not shape the design ---------------------------
def test_an_unestimated_row_with_an_outlier_changes_no_estimate(sim_df):
    base = _fit(sim_df)
    # one control-only row (item "no_treated") with an extreme activity and a new device
    added = _fit(_one_row_item(sim_df, recommended=0, user_activity=1000.0, device="fridge"))
    eff = added.effects_.set_index("item")
    assert eff.loc[999_999, "status"] == "no_treated"
    pd.testing.assert_frame_equal(eff.loc[base.effects_["item"]].reset_index(),
                                  base.effects_, check_exact=True)
    np.testing.assert_array_equal(added.design_spec_.center, base.design_spec_.center)


def test_one_outlier_in_a_fitted_row_does_not_flatten_a_column(sim_df):
    base = build_design(cr.InteractionLog(sim_df, **ROLES), dtype=np.float64)
    df = sim_df.copy()
    df.loc[0, "user_activity"] = 1e6
    design = build_design(cr.InteractionLog(df, **ROLES), dtype=np.float64)
    j = design.columns.index("user_activity")
    # the plain std would be ~9000: every other row would standardise to about 0
    assert design.X[1:, j].std() == pytest.approx(base.X[1:, j].std(), rel=0.05)
    assert design.X[0, j] > 1e5  # the outlier itself stays extreme (the model sees it)


def test_rare_binary_and_low_variance_columns_still_standardise(sim_df):
    rng = np.random.default_rng(0)
    df = sim_df.assign(rare_flag=(rng.random(len(sim_df)) < 0.003).astype(int),
                       tiny=rng.normal(size=len(sim_df)) * 1e-9)
    log = cr.InteractionLog(df, **dict(ROLES, confounders=ROLES["confounders"] + ["rare_flag", "tiny"]))
    design = build_design(log, dtype=np.float64)
    for col in ("rare_flag", "tiny"):
        j = design.columns.index(col)
        assert design.X[:, j].std() == pytest.approx(1.0, rel=1e-9)  # plain moments kept
        assert abs(design.X[:, j].mean()) < 1e-9


# -- item 5: no confounder vanishes silently -----------------------------------------------
def test_shifted_and_huge_columns_are_kept_and_dropped_ones_are_named(sim_df):
    df = sim_df.assign(shifted=sim_df["user_activity"] + 1e12, huge=sim_df["tenure"] * 1e40,
                       flat=3.0)
    roles = dict(ROLES, confounders=["shifted", "hour", "huge", "flat"])
    log = cr.InteractionLog(df, **roles)
    with pytest.warns(DataWarning, match="'flat' \\(constant"):
        design = build_design(log)  # float32, as the estimator uses it
    assert design.columns[:3] == ["shifted", "hour", "huge"] and design.dropped == ["flat"]
    reference = build_design(cr.InteractionLog(sim_df, **ROLES), dtype=np.float64)
    # 1e12 + x keeps x to float64's spacing at 1e12 (1.2e-4; float32 alone would keep nothing)
    np.testing.assert_allclose(design.X[:, 0], reference.X[:, 0], atol=2e-4)
    np.testing.assert_allclose(design.X[:, 2], reference.X[:, 2], atol=1e-5)  # no overflow
    with pytest.warns(DataWarning, match="flat"):
        est = cr.ItemEffectEstimator(nuisance="per_item").fit(cr.InteractionLog(df, **roles))
    assert est.dropped_columns_ == ["flat"]


# -- issue 12's spec: one code path, shards equal the whole --------------------------------
def test_spec_applied_to_row_shards_equals_the_whole_frame(sim_df):
    log = cr.InteractionLog(sim_df, **ROLES)
    rows = np.flatnonzero(sim_df["item_id"].to_numpy() % 3 > 0)
    spec = pickle.loads(pickle.dumps(DesignSpec.from_log(log, rows=rows)))
    whole = spec.transform(log)
    shards = [spec.transform(sim_df.iloc[a:a + 2500]) for a in range(0, len(sim_df), 2500)]
    np.testing.assert_array_equal(np.concatenate([s.X for s in shards]), whole.X)
    np.testing.assert_array_equal(build_design(log, rows=rows).X, whole.X)
    assert spec.outcome_binary is True and spec.n_rows == len(rows)


# -- item 6: folds depend on canonical row content only ------------------------------------
def test_folds_and_estimates_ignore_column_order_and_dtypes(sim_df):
    base = _fit(sim_df)
    reordered = _fit(sim_df, dict(ROLES, confounders=ROLES["confounders"][::-1],
                                  categorical=ROLES["categorical"][::-1]))
    retyped = _fit(sim_df.assign(hour=sim_df["hour"].astype(float),
                                 item_id=sim_df["item_id"].astype(np.int32)))
    for other in (reordered, retyped):
        np.testing.assert_array_equal(other.fold_, base.fold_)
        np.testing.assert_allclose(other.effects_["ate"], base.effects_["ate"], rtol=1e-9, atol=1e-12)
    shuffled = sim_df.sample(frac=1.0, random_state=2)
    folds = _fit(shuffled).fold_.loc[sim_df.index]
    np.testing.assert_array_equal(folds, base.fold_)  # row order still does not matter


def test_a_log_that_is_a_strided_view_of_the_frame_gives_the_copy_s_estimates(sim_df):
    """``df.iloc[::-1]`` and ``df.iloc[::2]`` are views with negative or wide strides (pandas
    copy-on-write): torch refused the reversed one ("negative strides"); both now give the
    estimates of the same rows copied."""
    for view in (sim_df.iloc[::-1], sim_df.iloc[::2]):
        np.testing.assert_allclose(_fit(view).effects_["ate"], _fit(view.copy()).effects_["ate"],
                                   rtol=1e-12, atol=1e-15)


# -- item 7: duplicates never straddle folds -----------------------------------------------
def test_duplicate_rows_share_a_fold_and_are_counted(sim_df):
    doubled = pd.concat([sim_df, sim_df], ignore_index=True)
    with pytest.warns(DataWarning, match="rows repeat another row exactly") as record:
        est = cr.ItemEffectEstimator(nuisance="per_item", n_folds=3).fit(
            cr.InteractionLog(doubled, **ROLES))
    n = len(sim_df)
    np.testing.assert_array_equal(est.fold_.iloc[:n].to_numpy(), est.fold_.iloc[n:].to_numpy())
    content = ["item_id", *ROLES["confounders"], *ROLES["categorical"], "recommended", "clicked"]
    expected = int(doubled.duplicated(content).sum())
    duplicates = [w for w in record if "rows repeat another row exactly" in str(w.message)]
    assert len(duplicates) == 1  # once, not once per split (per_item fits 4 splits)
    assert str(duplicates[0].message).startswith(f"{expected} rows")
    assert np.bincount(est.fold_, minlength=3).min() > 0.25 * len(doubled)  # still balanced


# -- item 9: rare levels pool, folds are bounded and cheap ---------------------------------
def test_rare_levels_pool_into_other_and_are_reported(sim_df):
    rng = np.random.default_rng(3)
    df = sim_df.assign(cookie=rng.integers(0, 10_000, len(sim_df)).astype(str))
    df.loc[:199, "cookie"] = "frequent"  # one level above the minimum count
    log = cr.InteractionLog(df, **dict(ROLES, categorical=["device", "cookie"]))
    spec = DesignSpec.from_log(log, min_level_count=10)
    assert spec.categorical["cookie"] == ["__other__", "frequent"]
    assert spec.pooled_levels["cookie"] > 5000
    assert [c for c in spec.columns if c.startswith("cookie")] == ["cookie=frequent"]
    # ties in frequency are broken by label, so the kept levels never depend on row order
    shuffled = DesignSpec.from_log(cr.InteractionLog(df.sample(frac=1.0, random_state=0),
                                                     **dict(ROLES, categorical=["cookie"])),
                                   max_levels=3, min_level_count=1)
    again = DesignSpec.from_log(cr.InteractionLog(df, **dict(ROLES, categorical=["cookie"])),
                                max_levels=3, min_level_count=1)
    assert shuffled.categorical == again.categorical and len(again.categorical["cookie"]) == 3


def test_fold_count_is_bounded_and_folds_are_balanced(sim_df):
    with pytest.raises(ValueError, match=f"n_folds must be an integer in \\[1, {MAX_FOLDS}\\]"):
        cr.ItemEffectEstimator(n_folds=MAX_FOLDS + 1).fit(cr.InteractionLog(sim_df, **ROLES))
    seg = sim_df["item_id"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        folds = assign_folds(sim_df, ["item_id", *ROLES["confounders"]], seg,
                             sim_df["recommended"].to_numpy(), sim_df["clicked"].to_numpy(), 20, 0)
    counts = np.bincount(folds, minlength=20)
    assert counts.min() > 0.8 * len(sim_df) / 20  # round-robin per stratum: near-equal folds


# -- issue 15: the design read straight from the frame, moments without float64 copies -----
def _reference_moments(v):
    """The moments as first written: float64 copies, a partition of the whole column."""
    v = np.asarray(v, dtype=np.float64)
    lo, hi = v.min(), v.max()
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo == hi:
        return design_module.choose_moments(len(v), lo, hi, None, None)

    def mean_std(u):
        m = float(np.abs(u).max())
        return m * float((u / m).mean()), m * float(np.sqrt(np.mean(np.square(u / m - (u / m).mean()))))

    ranks = design_module.tail_ranks(len(v))
    winsorised = None
    if ranks is not None:
        low, high = np.partition(v, ranks)[list(ranks)]
        winsorised = mean_std(np.clip(v, low, high))
    return design_module.choose_moments(len(v), lo, hi, mean_std(v), winsorised)


@pytest.mark.parametrize("case", ["normal32", "sorted", "reversed", "strided_tail", "ties",
                                  "heavy", "outlier", "tiny", "rare_flag", "spikes"])
def test_robust_moments_equal_the_whole_column_partition(case):
    rng = np.random.default_rng(3)
    n = 50_003
    v = {"normal32": rng.standard_normal(n).astype(np.float32),
         "sorted": np.sort(rng.standard_normal(n)),
         "reversed": np.sort(rng.standard_normal(n).astype(np.float32))[::-1].copy(),
         # the sampled values (stride n // 20000 = 2) are the lowest half: the sample's
         # threshold falls short of the tail rank, the whole column is partitioned
         "strided_tail": np.where(np.arange(n) % 2 == 0, -10 - rng.random(n), rng.standard_normal(n)),
         "ties": np.round(rng.standard_normal(n)).astype(np.float32),
         "heavy": rng.standard_cauchy(n),
         "outlier": np.r_[rng.standard_normal(n - 1), 1e9],
         "tiny": rng.standard_normal(150),
         # winsorised std 0 (plain moments kept), and a few spikes near the 2x inflation
         "rare_flag": (rng.random(n) < 0.005).astype(np.float32),
         "spikes": np.where(rng.random(n) < 0.004, 30.0, 1.0) * rng.standard_normal(n)}[case]
    with np.errstate(invalid="ignore"):  # the reference's 0 / 0 of an all-zero winsorised flag
        assert design_module._robust_moments(v) == _reference_moments(v)  # bit for bit


def test_design_rows_gather_any_rows_as_the_transform_writes_them(sim_df):
    df = sim_df.assign(hour=sim_df["hour"].astype(np.int16), tenure=sim_df["tenure"].astype(np.float32))
    log = cr.InteractionLog(df, **ROLES)
    spec = DesignSpec.from_log(log)
    rows = np.random.default_rng(4).permutation(len(df))[:3000]
    for dtype in (np.float32, np.float64):
        X = spec.transform(log, dtype=dtype).X
        out = np.full((len(rows), X.shape[1] + 1), np.nan, dtype=dtype)
        spec.rows(log, dtype=dtype).gather_into(rows, out[:, 1:])  # a strided target
        np.testing.assert_array_equal(out[:, 1:], X[rows])
        assert np.isnan(out[:, 0]).all()
    raw = spec.rows(log, dtype=np.float64, standardise=False)
    out = np.empty((len(rows), raw.shape[1]))
    raw.gather_into(rows, out)
    np.testing.assert_array_equal(out, spec.transform(log, dtype=np.float64, standardise=False).X[rows])


@pytest.fixture(params=["frame", "matrix"])
def design_source(request, monkeypatch):
    """Design rows gathered from the frame's columns (a log above the size limit) or from
    the standardised matrix ``DesignRows.matrix`` forms once (the default below it)."""
    if request.param == "frame":
        monkeypatch.setattr(design_rows, "MATERIALISE_BYTES", 0)
    return request.param


def test_design_rows_form_their_matrix_only_within_the_size_limit(sim_df, design_source):
    log = cr.InteractionLog(sim_df, **ROLES)
    spec = DesignSpec.from_log(log)
    source = spec.rows(log, dtype=np.float32)
    matrix = source.matrix()
    if design_source == "frame":
        assert matrix is None
    else:
        assert matrix is source.matrix()  # formed once, kept
        np.testing.assert_array_equal(matrix[:-1, 1:].numpy(), spec.transform(log).X)
        assert bool((matrix[:-1, 0] == 1).all())  # the intercept column, as padded designs hold it
        assert bool((matrix[-1] == 0).all())  # the row padding slots gather: zeros


def test_padded_design_from_the_frame_equals_the_padded_matrix(sim_df, design_source):
    log = cr.InteractionLog(sim_df, **ROLES)
    spec = DesignSpec.from_log(log)
    rng = np.random.default_rng(5)
    index = np.sort(rng.choice(len(sim_df), 4000, replace=False))
    layout = glm_layout.make_layout(rng.integers(0, 9, len(index)), 9, block_size=16)
    for dtype in (np.float32, np.float64):
        X = torch.as_tensor(spec.transform(log, dtype=dtype).X)
        ours = glm_layout.pad_design(layout, spec.rows(log, dtype=dtype), index=torch.as_tensor(index))
        expected = glm_layout.pad_design(layout, X, index=torch.as_tensor(index))
        assert ours.dtype == expected.dtype
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)


@pytest.mark.parametrize("n_folds", [1, 2, 3])
def test_cross_fit_from_the_frame_equals_the_fit_on_the_matrix(sim_df, n_folds, design_source):
    """One fold set's padded design at a time, read from the frame: the same predictions, bit
    for bit, as the fit on the standardised design matrix."""
    log = cr.InteractionLog(sim_df, **ROLES)
    spec = DesignSpec.from_log(log)
    seg = pd.factorize(sim_df["item_id"], sort=True)[0].astype(np.int64)
    t = sim_df["recommended"].to_numpy(np.int64)
    y = sim_df["clicked"].to_numpy(np.float64)
    folds = np.random.default_rng(6).integers(0, n_folds, len(sim_df))
    rows = np.flatnonzero(seg % 5 > 0)  # a subset: the padding gathers through an index
    models = dict(propensity=SegmentGLM(family="logistic", dtype="float64"),
                  outcome=SegmentGLM(family="logistic", dtype="float64"))
    fits = [cross_fit(X, None, None, rows, seg[rows], t[rows], y[rows], folds[rows], seg.max() + 1,
                      n_folds=n_folds, device="cpu", dtype=torch.float64, **models)
            for X in (spec.transform(log, dtype=np.float64).X, spec.rows(log, dtype=np.float64))]
    for name in ("e", "mu0", "mu1"):
        torch.testing.assert_close(getattr(fits[1], name), getattr(fits[0], name), rtol=0, atol=0)
        assert bool(torch.isfinite(getattr(fits[1], name)).all())
