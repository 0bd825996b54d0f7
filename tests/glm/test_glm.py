"""The batched segment GLM engine: solver, linear algebra, layout and the public door,
each against a plain reference (scikit-learn, scipy, explicit algebra)."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import optimize
from sklearn.linear_model import LogisticRegression, Ridge

from causalrec.glm import SegmentGLM, linalg, solver
from causalrec.glm import layout as glm_layout


def fit_segments(X, y, seg, K, **options):
    """The solver's fit (GLMFit) through the public door, in X's precision."""
    X = torch.as_tensor(X)
    return SegmentGLM(dtype=X.dtype, **options).fit(X, y, seg, n_segments=K).fit_


def penalties(p, shrinkage):
    return SegmentGLM(pooled=True, shrinkage=shrinkage)._penalties(p, torch.float64, "cpu")


@pytest.fixture(scope="module")
def segments_data():
    rng = np.random.default_rng(0)
    K, d = 50, 6
    n_k = rng.integers(60, 300, size=K)
    seg = np.repeat(np.arange(K), n_k)
    X = rng.normal(size=(len(seg), d))
    beta = rng.normal(size=(K, d))
    eta = (X * beta[seg]).sum(1) + rng.normal(size=K)[seg]
    y_bin = (rng.random(len(seg)) < 1 / (1 + np.exp(-eta))).astype(float)
    y_cont = eta + rng.normal(size=len(seg))
    return X, seg, K, y_bin, y_cont


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_item_logistic_equals_sklearn(segments_data, dtype):
    X, seg, K, y, _ = segments_data
    fit = fit_segments(torch.tensor(X, dtype=dtype), y, seg, K, pooled=False,
                                penalty=2.0, intercept_penalty=0.0)
    coef = fit.coef.double().numpy()
    worst = 0.0
    for k in range(K):
        rows = seg == k
        ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(X[rows], y[rows])
        ours = 1 / (1 + np.exp(-(coef[k, 0] + X[rows] @ coef[k, 1:])))
        worst = max(worst, np.abs(ref.predict_proba(X[rows])[:, 1] - ours).max())
    assert fit.converged
    assert worst < 1e-4


def test_per_item_linear_equals_sklearn_ridge(segments_data):
    X, seg, K, _, y = segments_data
    fit = fit_segments(torch.tensor(X), y, seg, K, family="gaussian", pooled=False,
                                penalty=3.0, intercept_penalty=0.0)
    coef = fit.coef.numpy()
    worst = max(np.abs(Ridge(alpha=3.0).fit(X[seg == k], y[seg == k]).predict(X[seg == k])
                       - (coef[k, 0] + X[seg == k] @ coef[k, 1:])).max() for k in range(K))
    assert worst < 1e-4


def test_pooled_newton_reaches_the_penalised_optimum(segments_data):
    """The Schur-complement Newton solve must land on the optimum a generic solver finds."""
    X, seg, K, y, _ = segments_data
    shrink = 5.0
    fit = fit_segments(torch.tensor(X), y, seg, K, pooled=True, shrinkage=shrink)
    p = X.shape[1] + 1
    Xi = np.column_stack([np.ones(len(X)), X])
    local_pen, shared_pen = (v.numpy() for v in penalties(p, shrink))

    def objective(params):
        shared, local = params[:p], params[p:].reshape(K, p)
        eta = (Xi * (shared + local)[seg]).sum(1)
        mu = 1 / (1 + np.exp(-eta))
        loss = np.logaddexp(0, eta).sum() - y @ eta
        g_rows = Xi * (mu - y)[:, None]
        g_local = np.zeros((K, p))
        np.add.at(g_local, seg, g_rows)
        value = loss + 0.5 * (local_pen * local ** 2).sum() + 0.5 * (shared_pen * shared ** 2).sum()
        grad = np.concatenate([g_local.sum(0) + shared_pen * shared,
                               (g_local + local_pen * local).ravel()])
        return value, grad

    ref = optimize.minimize(objective, np.zeros(p * (K + 1)), jac=True, method="L-BFGS-B",
                            options=dict(maxiter=20_000, gtol=1e-9, ftol=1e-15))
    ours = np.concatenate([fit.shared.numpy(), fit.local.numpy().ravel()])
    assert objective(ours)[0] <= ref.fun + 1e-6
    coef_ref = ref.x[:p] + ref.x[p:].reshape(K, p)
    eta_ours = (Xi * fit.coef.numpy()[seg]).sum(1)
    eta_ref = (Xi * coef_ref[seg]).sum(1)
    assert np.abs(1 / (1 + np.exp(-eta_ours)) - 1 / (1 + np.exp(-eta_ref))).max() < 1e-4

def _spd_batch(K, p, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(K, p, 3 * p, generator=g, dtype=dtype)
    A = R @ R.mT / (3 * p)
    A[:, 0, 0] += torch.logspace(-3, 4, K, dtype=dtype)  # intercept-like scales, cond up to ~1e6
    return A


@pytest.mark.parametrize("p", [1, 7, 65])
def test_spd_inverse_equals_linalg_inv(p):
    A = _spd_batch(40, p) + 1e-3 * torch.eye(p, dtype=torch.float64)
    ours = linalg.spd_inverse(A)
    ref = torch.linalg.inv(A)
    rel = (ours - ref).abs().amax((1, 2)) / ref.abs().amax((1, 2))
    assert float(rel.max()) < 1e-8


def test_spd_inverse_falls_back_on_singular_matrices():
    A = _spd_batch(5, 12)
    A[2] = 0.0  # singular: the blocked elimination divides by zero
    inv = linalg.spd_inverse(A)
    assert torch.isfinite(inv).all()
    np.testing.assert_allclose(inv[0].numpy(), torch.linalg.inv(A[0]).numpy(), rtol=1e-8)


def test_shared_hessian_equals_explicit_schur_complement():
    K, p = 30, 9
    G = _spd_batch(K, p, seed=1)
    local_pen = torch.linspace(0.5, 4.0, p, dtype=torch.float64)
    shared_pen = torch.full((p,), 0.1, dtype=torch.float64)
    A = G + torch.diag(local_pen)
    explicit = G.sum(0) + torch.diag(shared_pen) - (G @ torch.linalg.solve(A, G)).sum(0)
    inv, inv_sum = linalg.segment_inverses(G, local_pen)
    np.testing.assert_allclose(inv_sum.numpy(), torch.linalg.inv(A).sum(0).numpy(), rtol=1e-9)
    S = linalg.shared_hessian(inv_sum, K, local_pen, shared_pen)
    np.testing.assert_allclose(S.numpy(), explicit.numpy(), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverses_and_solves_of_a_segment_subset_equal_those_of_its_gathered_copy(
        monkeypatch, dtype):
    """The solver forms the fresh segments' inverses in place and reads the active ones a slab
    at a time (no gathered copies): bit for bit what the gathered batch gives, over many
    slabs (small chunks), with the other segments' inverses left untouched."""
    monkeypatch.setattr(linalg, "chunk_bytes", lambda device: 2**20)
    K, p = 400, 65
    G = _spd_batch(K, p, seed=3).to(dtype)
    local_pen = torch.full((p,), 2.0, dtype=dtype)
    idx = torch.as_tensor(np.sort(np.random.default_rng(4).choice(K, 277, replace=False)))
    inv_all, _ = linalg.segment_inverses(G, local_pen)
    inv = inv_all.clone()
    before = inv.clone()
    inv[idx] = 0.0
    _, total = linalg.segment_inverses(G, local_pen, out=inv, index=idx)
    gathered, gathered_total = linalg.segment_inverses(G[idx], local_pen)
    assert torch.equal(inv[idx], gathered) and torch.equal(total, gathered_total)
    rest = torch.ones(K, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(inv[rest], before[rest])
    b = torch.randn(len(idx), p, dtype=dtype, generator=torch.Generator().manual_seed(5))
    assert torch.equal(linalg.symmetric_solve(inv, b, idx), linalg.symmetric_solve(inv[idx], b))


def test_warm_start_reaches_the_cold_start_optimum():
    """A start from another fold's fit, including an intercept that ran off on data without
    events, must end at the same optimum as the cold start."""
    rng = np.random.default_rng(3)
    K, d = 40, 5
    seg = np.repeat(np.arange(K), rng.integers(30, 200, size=K))
    X = torch.tensor(rng.normal(size=(len(seg), d)))
    y = (rng.random(len(seg)) < 0.3).astype(float)
    y[seg == 0] = 0.0  # no events: intercept heads toward -inf
    cold = fit_segments(X, y, seg, K, pooled=True, shrinkage=5.0, tol=1e-10)
    y_other = y.copy()
    y_other[seg == 1] = 0.0  # in the "other fold" item 1 had no events
    other = fit_segments(X, y_other, seg, K, pooled=True, shrinkage=5.0)
    layout = glm_layout.make_layout(seg, K)
    Xb, yb = glm_layout.pad_design(layout, X), glm_layout.pad(layout, torch.tensor(y))
    blocks = torch.arange(len(Xb))
    local_pen, shared_pen = penalties(d + 1, 5.0)
    warm = solver.fit_glm(Xb, yb, layout.valid.double(), blocks, layout.block_cell, K,
                         local_penalty=local_pen, shared_penalty=shared_pen, tol=1e-10,
                         max_iter=50, init=other)
    assert warm.converged
    eta = lambda fit: (torch.cat([torch.ones(len(X), 1, dtype=X.dtype), X], 1)
                       * fit.coef[torch.as_tensor(seg)]).sum(1)
    p_cold, p_warm = torch.sigmoid(eta(cold)), torch.sigmoid(eta(warm))
    assert float((p_cold - p_warm).abs().max()) < 1e-6


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-7), (torch.float32, 2e-5)])
def test_chord_steps_end_at_the_newton_optimum(monkeypatch, dtype, tol):
    """Fits that reuse a Hessian (chord steps) must stop where Newton with a fresh Hessian at
    every step stops; the pooled model's shared part converges through them too."""
    rng = np.random.default_rng(5)
    K, d = 60, 8
    seg = np.repeat(np.arange(K), rng.integers(40, 400, size=K))
    X = torch.tensor(rng.normal(size=(len(seg), d)), dtype=dtype)
    beta = rng.normal(size=d) + 0.5 * rng.normal(size=(K, d))
    eta = (X.double().numpy() * beta[seg]).sum(1) - 1.0
    y = (rng.random(len(seg)) < 1 / (1 + np.exp(-eta))).astype(float)
    hessian_passes = []
    real_pass = solver._pass

    def counting_pass(*args, **kwargs):
        hessian_passes.append(kwargs["need_hessian"])
        return real_pass(*args, **kwargs)

    monkeypatch.setattr(solver, "_pass", counting_pass)
    fits, default = {}, solver.HESSIAN_STEPS
    for steps in (default, 10_000):
        monkeypatch.setattr(solver, "HESSIAN_STEPS", steps)
        hessian_passes.clear()
        fits[steps] = fit_segments(X, y, seg, K, pooled=True, shrinkage=2.0)
        assert fits[steps].converged
        gradient_only = hessian_passes[:-1].count(False)  # the last pass needs only losses
        assert gradient_only >= 2 if steps == default else gradient_only == 0
    chord, newton = (torch.cat([f.coef, f.shared[None]]) for f in fits.values())
    assert float((chord - newton).abs().max()) < tol * max(1.0, float(newton.abs().max()))


@pytest.mark.parametrize("family,pooled", [("logistic", True), ("logistic", False),
                                           ("gaussian", True)])
def test_cold_start_hessian_from_block_grams(monkeypatch, segments_data, family, pooled):
    """A cold start's linear predictor is constant in each segment, so its Hessian is the
    segment's X'X times the start's variance: with ``first_gram`` the set-up makes a
    gradient pass instead of a Gram pass and the fit ends at the same optimum (float64:
    the Hessians agree to rounding, so the fits to far below the tolerance)."""
    from causalrec.glm import BlockedDesign
    from causalrec.glm.passes import block_grams
    X, seg, K, y_bin, y_cont = segments_data
    y = y_bin if family == "logistic" else y_cont
    design = BlockedDesign(torch.as_tensor(X), seg, K, block_size=16)
    yb = design.pad(torch.as_tensor(y))
    blocks = design.blocks(design.block_seg % 3 != 0)  # a subset of the blocks, as an arm's
    grams = block_grams(design.X, blocks, design.block_seg, K)
    explicit = torch.zeros_like(grams)
    Xb, w = design.X[blocks], design.weight[blocks]
    explicit.index_add_(0, design.block_seg[blocks], torch.einsum("bri,br,brj->bij", Xb, w, Xb))
    torch.testing.assert_close(grams, explicit)
    passes = []
    real_pass = solver._pass

    def counting_pass(*args, **kwargs):
        passes.append(kwargs["need_hessian"])
        return real_pass(*args, **kwargs)

    monkeypatch.setattr(solver, "_pass", counting_pass)
    fits = {}
    for first_gram in (None, grams):
        passes.clear()
        model = SegmentGLM(family=family, pooled=pooled, shrinkage=2.0, dtype="float64")
        fits[first_gram is None] = model.fit_blocks(design, yb, blocks, n_segments=K,
                                                    first_gram=first_gram).fit_
        counts = passes.count(True), len(passes)
        if first_gram is None:
            plain = counts
    with_grams = counts
    assert with_grams[0] == plain[0] - 1  # the set-up's Gram pass is gone
    if family == "logistic":
        assert with_grams[1] == plain[1]  # ... replaced by a gradient pass
    reference, ours = (torch.cat([f.coef, f.shared[None]]) for f in (fits[True], fits[False]))
    assert all(f.converged for f in fits.values())
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-9)


def test_pad_design_standardises_and_gathers_a_row_subset_without_copying():
    rng = np.random.default_rng(2)
    X = torch.tensor(rng.normal(3.0, 2.0, size=(500, 4)))
    rows = np.sort(rng.choice(500, 300, replace=False))
    cells = rng.integers(0, 7, 300)
    layout = glm_layout.make_layout(cells, 7, block_size=8)
    assert layout.rows.dtype == torch.int32  # (memory: the layout lives as long as its design)
    center, scale = X.mean(0).numpy(), (1 / X.std(0)).numpy()
    ours = glm_layout.pad_design(layout, X, center, scale, index=torch.as_tensor(rows))
    expected = glm_layout.pad_design(layout, (X[rows] - X.mean(0)) / X.std(0))
    torch.testing.assert_close(ours, expected)
    assert bool((ours[~layout.valid] == 0).all())  # padding stays zero, intercept included


def test_buffer_helpers():
    """``empty`` gives writable CPU buffers of the asked dtype (numpy-backed); ``read_only_tensor``
    reads a read-only frame view without torch's warning; chunk budgets follow the device."""
    import warnings
    for dtype in (torch.float32, torch.float64, torch.int64):
        buf = glm_layout.empty((3, 4), dtype, "cpu")
        assert buf.shape == (3, 4) and buf.dtype == dtype
        buf.fill_(2)
        assert int(buf.sum()) == 24
    frame = pd.DataFrame(np.arange(6.0).reshape(3, 2))
    values = frame.to_numpy()
    values.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = glm_layout.read_only_tensor(values, torch.float32)
    np.testing.assert_array_equal(t.numpy(), values)
    assert glm_layout.chunk_bytes("cpu") == glm_layout.CHUNK_BYTES
    assert glm_layout.chunk_bytes(torch.device("cuda")) == glm_layout.GPU_CHUNK_BYTES




def test_weights_and_offsets_through_the_public_door():
    """A weight of 2 is a duplicated row; an offset shifts the linear predictor (a Gaussian
    model with offset o fitted to y + o equals the model without both)."""
    rng = np.random.default_rng(11)
    K, n = 6, 1200
    seg = rng.integers(0, K, n)
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0]))).astype(float)
    twice = np.r_[np.arange(n), np.arange(100)]
    w = np.ones(n)
    w[:100] = 2.0
    a = SegmentGLM(pooled=False, tol=1e-10).fit(X, y, seg, w)
    b = SegmentGLM(pooled=False, tol=1e-10).fit(X[twice], y[twice], seg[twice])
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-7, atol=1e-9)
    o = rng.normal(size=n)
    yc = X[:, 1] + rng.normal(size=n)
    c = SegmentGLM(family="gaussian", pooled=True, shrinkage=3.0).fit(X, yc + o, seg, offset=o)
    d = SegmentGLM(family="gaussian", pooled=True, shrinkage=3.0).fit(X, yc, seg)
    np.testing.assert_allclose(c.coef_, d.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(c.predict(X, seg, offset=o) - o, d.predict(X, seg), atol=1e-9)
    with pytest.raises(ValueError, match="family"):
        SegmentGLM(family="poisson").fit(X, y, seg)


def test_segment_moments_equal_explicit_sums():
    from causalrec.glm import segment_moments
    rng = np.random.default_rng(12)
    K, n = 5, 700
    seg = rng.integers(0, K, n)
    X, y, w = rng.normal(size=(n, 2)), rng.normal(size=n), rng.random(n)
    H, b, q = segment_moments(torch.tensor(X), y, w, seg, K)
    X1 = np.column_stack([np.ones(n), X])
    for k in range(K):
        m = seg == k
        np.testing.assert_allclose(H[k].numpy(), (X1[m] * w[m, None]).T @ X1[m], rtol=1e-10)
        np.testing.assert_allclose(b[k].numpy(), (X1[m] * w[m, None]).T @ y[m], rtol=1e-10)
        np.testing.assert_allclose(float(q[k]), float(w[m] @ y[m] ** 2), rtol=1e-10)


def test_pack_shards_balances_rows_and_never_splits_items():
    from causalrec.estimate.nuisance import pack_shards
    rows = np.array([1000, 10, 400, 390, 0, 5, 200, 0])
    shard = pack_shards(rows, 3)
    assert shard.shape == rows.shape and set(shard) <= {0, 1, 2}
    load = np.bincount(shard, weights=rows, minlength=3)
    assert shard[0] != shard[2] and shard[0] != shard[3]  # the giant item keeps a shard alone
    assert load.max() == 1000 and load.sum() == rows.sum()


def test_design_weight_is_the_intercept_column_and_the_heap_release_runs():
    """A padded design's row weight (1 on rows, 0 on padding) is its intercept column, a
    view: no separate (n_blocks, block_size) array. ``release_free_heap`` finds glibc's
    ``malloc_trim`` on glibc Linux and changes no live array."""
    import platform
    import sys
    from causalrec.glm import BlockedDesign
    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.normal(size=(500, 4)))
    design = BlockedDesign(X, rng.integers(0, 7, 500), 7)
    assert torch.equal(design.weight, design.layout.valid.to(X.dtype))
    assert design.weight.untyped_storage().data_ptr() == design.X.untyped_storage().data_ptr()
    before = design.X.clone()
    garbage = [np.ones(2**20) for _ in range(8)]  # heap-sized arrays, freed
    del garbage
    glm_layout.release_free_heap()
    assert torch.equal(design.X, before)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert glm_layout._MALLOC_TRIM is not None
