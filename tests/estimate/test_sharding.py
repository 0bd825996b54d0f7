"""Sharded fits equal whole fits: the engine's reducer carries everything that couples
segments, and per-segment decisions make a subset's fit the fit it gets in the whole run."""
import numpy as np
import pandas as pd
import pytest
import torch

import causalrec as cr
from causalrec.glm import SegmentGLM, ThreadReducer


@pytest.fixture(scope="module")
def segments():
    rng = np.random.default_rng(7)
    K, d = 24, 5
    sizes = rng.integers(20, 300, size=K)
    sizes[3] = 4000  # one very large segment
    seg = np.repeat(np.arange(K), sizes)
    X = rng.normal(size=(len(seg), d))
    beta = rng.normal(size=d) + 0.5 * rng.normal(size=(K, d))
    eta = (X * beta[seg]).sum(1) - 1.0
    y = (rng.random(len(seg)) < 1 / (1 + np.exp(-eta))).astype(float)
    y[seg == 5] = 0.0  # no events: an intercept that drifts toward -inf
    return X, y, seg, K


def _sharded_fit(X, y, seg, K, shard_of, **options):
    """Each shard's rows in its own solver and thread, renumbered 0..n_s - 1."""
    shards = [np.flatnonzero(shard_of == s) for s in range(shard_of.max() + 1)]

    def fit(items, reducer):
        code = np.full(K, -1)
        code[items] = np.arange(len(items))
        rows = code[seg] >= 0
        return SegmentGLM(**options).fit(X[rows], y[rows], code[seg[rows]],
                                         n_segments=len(items), reducer=reducer)

    coef = np.empty((K, X.shape[1] + 1))
    converged = np.empty(K, dtype=bool)
    for items, model in zip(shards, ThreadReducer(len(shards)).run(fit, shards)):
        coef[items], converged[items] = model.coef_, model.converged_
    return coef, converged


@pytest.mark.parametrize("pooled", [True, False])
@pytest.mark.parametrize("n_shards", [1, 2, 3])
def test_sharded_segment_glm_equals_the_whole_fit(segments, pooled, n_shards):
    X, y, seg, K = segments
    options = dict(pooled=pooled, shrinkage=4.0, tol=1e-9)
    whole = SegmentGLM(**options).fit(X, y, seg, n_segments=K)
    shard_of = np.arange(K) % n_shards
    shard_of[3] = n_shards - 1  # the large segment shares the last shard
    coef, converged = _sharded_fit(X, y, seg, K, shard_of, **options)
    assert whole.converged_.all() and converged.all()
    scale = np.maximum(np.abs(whole.coef_), 1.0)
    assert np.max(np.abs(coef - whole.coef_) / scale) < 1e-9


def test_per_item_fit_of_a_subset_is_its_fit_in_the_whole_run(segments):
    X, y, seg, K = segments
    whole = SegmentGLM(pooled=False, tol=1e-9).fit(X, y, seg, n_segments=K)
    keep = np.isin(seg, [0, 3, 5])
    part = SegmentGLM(pooled=False, tol=1e-9).fit(X[keep], y[keep], np.searchsorted([0, 3, 5], seg[keep]))
    # the same optimum, the same steps; only the layout's block size (chosen from the data)
    # changes the order of the floating-point sums
    np.testing.assert_allclose(part.coef_, whole.coef_[[0, 3, 5]], rtol=1e-12, atol=1e-14)
    assert part.n_iter_ <= whole.n_iter_


def _log(seed=3):
    sim = cr.datasets.simulate_log(n_items=30, n_rows=12_000, popularity_skew=1.2, seed=seed)
    df = sim.data.copy()
    # three unestimable items: no treated rows, too few rows, no control rows
    df.loc[df["item_id"] == df["item_id"].unique()[0], "recommended"] = 0
    tiny = df.index[df["item_id"] == df["item_id"].unique()[1]][:5]
    df = df.drop(df.index[df["item_id"] == df["item_id"].unique()[1]].difference(tiny))
    df.loc[df["item_id"] == df["item_id"].unique()[2], "recommended"] = 1
    roles = dict(sim.roles)
    roles.pop("text")
    return df, roles


@pytest.mark.parametrize("nuisance", ["pooled", "per_item"])
@pytest.mark.parametrize("method", ["aipw", "ipw", "or"])
def test_sharded_estimator_equals_the_whole_fit(nuisance, method):
    df, roles = _log()
    # two splits ("auto" fits four here): the repeats' combination is checked, at half the cost
    options = dict(nuisance=nuisance, method=method, dtype="float64", seed=1, n_repeats=2)
    whole = cr.estimate_item_effects(df, **roles, **options)
    items = whole["item"].to_numpy()
    unestimable = whole["status"].isin(["no_treated", "no_control", "too_few_rows"]).to_numpy()
    assert unestimable.sum() >= 3
    largest = int(np.argmax(whole["n"].to_numpy() * ~unestimable))
    for shards in (2, 3):
        explicit = np.arange(len(items)) % (shards - 1)  # shards 0..S-2 hold estimable items
        explicit[unestimable] = shards - 1               # a shard of unestimable items only
        explicit[largest] = 0
        for spec in (shards, explicit):
            sharded = cr.estimate_item_effects(df, **roles, **options, shards=spec)
            pd.testing.assert_series_equal(sharded["status"], whole["status"])
            for col in ("ate", "se", "ci_low", "ci_high", "p_value"):
                np.testing.assert_allclose(sharded[col], whole[col], rtol=1e-9, atol=1e-12)


def test_sharded_estimator_keeps_folds_and_logged_propensities():
    df, roles = _log(seed=4)
    df = df.assign(logged=np.clip(df["user_activity"].rank(pct=True), 0.05, 0.95))
    a = cr.ItemEffectEstimator(dtype="float64").fit(cr.InteractionLog(df, **roles, propensity="logged"))
    b = cr.ItemEffectEstimator(dtype="float64", shards=3).fit(
        cr.InteractionLog(df, **roles, propensity="logged"))
    pd.testing.assert_series_equal(a.fold_, b.fold_)
    np.testing.assert_allclose(b.mu1_, a.mu1_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.effects_["ate"], a.effects_["ate"], rtol=1e-9, atol=1e-12)


def test_bad_shards_raise():
    df, roles = _log()
    with pytest.raises(ValueError, match="shards"):
        cr.estimate_item_effects(df, **roles, shards=0)
    with pytest.raises(ValueError, match="one shard id per item"):
        cr.estimate_item_effects(df, **roles, shards=np.zeros(3, dtype=int))


def test_a_failing_shard_raises_its_error_instead_of_hanging():
    def fit(shard, reducer):
        if shard == 1:
            raise RuntimeError("shard 1 failed")
        return reducer.sum(torch.ones(1))  # would wait for shard 1 forever without the abort

    with pytest.raises(RuntimeError, match="shard 1 failed"):
        ThreadReducer(3).run(fit, [0, 1, 2])
    assert [float(v) for v in ThreadReducer(3).run(lambda s, r: r.sum(torch.tensor([s + 1.0])), [0, 1, 2])] == [6.0] * 3


def test_sums_and_maxima_in_one_reduction_equal_them_apart():
    """``sum_max`` (the lockstep's mixed batch: one round or all-reduce instead of two) gives
    the separate ``sum`` and ``max`` bitwise, for three ranks and for one."""
    def parts(shard):
        gen = torch.Generator().manual_seed(shard)
        return torch.randn(5, generator=gen, dtype=torch.float64), torch.randn(
            3, generator=gen, dtype=torch.float64)

    together = ThreadReducer(3).run(lambda s, r: r.sum_max(*parts(s)), [0, 1, 2])
    apart = ThreadReducer(3).run(lambda s, r: (r.sum(parts(s)[0]), r.max(parts(s)[1])), [0, 1, 2])
    for (s1, m1), (s2, m2) in zip(together, apart):
        assert torch.equal(s1, s2) and torch.equal(m1, m2)
    assert not torch.equal(together[0][0], parts(0)[0])  # reduced over the ranks
    one = ThreadReducer(1).run(lambda s, r: r.sum_max(*parts(s)), [0])[0]
    assert torch.equal(one[0], parts(0)[0]) and torch.equal(one[1], parts(0)[1])


@pytest.mark.parametrize("n_shards", [1, 2])
def test_cross_fit_reads_the_rows_in_use_alike_from_a_mask_positions_or_a_subset(segments, n_shards):
    """The estimator passes the rows in use as a boolean mask (1 byte a row); positions (the
    Spark shards) and a subset X with every row in use must give the same fits, bit for bit."""
    from causalrec.estimate.nuisance import cross_fit, pack_shards
    X, y, seg, K = segments
    rng = np.random.default_rng(11)
    use = rng.random(len(seg)) < 0.7
    t = (rng.random(len(seg)) < 0.4).astype(np.int8)
    folds = rng.integers(0, 2, len(seg)).astype(np.int8)
    shard_of = pack_shards(np.bincount(seg[use], minlength=K), n_shards)
    models = dict(propensity=SegmentGLM(dtype="float64"), outcome=SegmentGLM(dtype="float64"))
    fit = lambda X_, rows: cross_fit(
        X_, None, None, rows, seg[use], t[use], y[use], folds[use], K, n_folds=2, **models,
        shard_of_item=shard_of, device="cpu", dtype=torch.float64)
    by_mask = fit(torch.as_tensor(X), use)
    for other in (fit(torch.as_tensor(X), np.flatnonzero(use)),
                  fit(torch.as_tensor(X[use]), slice(None))):
        for name in ("e", "mu0", "mu1"):
            assert torch.equal(getattr(other, name), getattr(by_mask, name))
    assert torch.isfinite(by_mask.e).all() and len(by_mask.e) == use.sum()


def test_blocked_arm_is_the_padded_t_on_rows_and_the_propensity_fit_is_unchanged(segments):
    """The propensity reads t as a broadcast view of each block's arm (cells are (fold, arm,
    item)); on rows it is the padded t, and padding is only read times a zero weight, so the
    fit equals the one on the padded t bit for bit."""
    from causalrec.estimate.nuisance import blocked_arm
    from causalrec.glm import BlockedDesign
    X, _, seg, K = segments
    rng = np.random.default_rng(12)
    t = (rng.random(len(seg)) < 0.4).astype(np.int8)
    folds = rng.integers(0, 2, len(seg))
    design = BlockedDesign(torch.as_tensor(X), (folds * 2 + t) * K + seg, K * 4,
                           cell_segment=np.tile(np.arange(K), 4))
    padded = design.pad(torch.as_tensor(t, dtype=torch.float64))
    view = blocked_arm(design, K, torch.float64)
    assert view.shape == padded.shape and view.untyped_storage().nbytes() < padded.numel()
    assert torch.equal(view * design.weight, padded)
    assert bool((view[~design.layout.valid] != 0).any())  # padding really differs
    fit = lambda tb: SegmentGLM(dtype="float64").fit_blocks(design, tb, design.blocks(), n_segments=K)
    a, b = fit(padded), fit(view)
    assert np.array_equal(a.coef_, b.coef_) and a.n_iter_ == b.n_iter_


@pytest.mark.parametrize("family", ["logistic", "gaussian"])
def test_cross_fit_with_a_one_byte_outcome_equals_the_float_outcome(segments, family):
    """A 0/1 outcome in int8 stays one byte in the blocks (the fits compute with it in
    float): logistic and (scaled) linear outcome models give the float outcome's fits bit
    for bit."""
    from causalrec.estimate.nuisance import _blocked_dtype, cross_fit
    X, y, seg, K = segments
    rng = np.random.default_rng(13)
    t = (rng.random(len(seg)) < 0.4).astype(np.int8)
    folds = rng.integers(0, 2, len(seg)).astype(np.int8)
    models = dict(propensity=SegmentGLM(dtype="float32"),
                  outcome=SegmentGLM(family=family, dtype="float32"))
    fit = lambda y_: cross_fit(torch.as_tensor(X, dtype=torch.float32), None, None, slice(None),
                               seg, t, y_, folds, K, n_folds=2, **models, device="cpu",
                               dtype=torch.float32)
    narrow, wide = fit(y.astype(np.int8)), fit(y)
    for name in ("e", "mu0", "mu1"):
        assert torch.equal(getattr(narrow, name), getattr(wide, name))
    assert _blocked_dtype(y.astype(np.int8), torch.float32) is None
    assert _blocked_dtype(y, torch.float32) is torch.float32
    assert _blocked_dtype(y.astype(np.int64), torch.float32) is torch.float32
