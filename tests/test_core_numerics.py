"""Numerical building blocks of the estimator's hot path, each against a plain reference."""
import numpy as np
import pandas as pd
import pytest
import torch

from causalrec.estimate import _core
from causalrec.estimate.design import _mix, _stratum_order, row_hash


def _spd_batch(K, p, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(K, p, 3 * p, generator=g, dtype=dtype)
    A = R @ R.mT / (3 * p)
    A[:, 0, 0] += torch.logspace(-3, 4, K, dtype=dtype)  # intercept-like scales, cond up to ~1e6
    return A


@pytest.mark.parametrize("p", [1, 7, 65])
def test_spd_inverse_equals_linalg_inv(p):
    A = _spd_batch(40, p) + 1e-3 * torch.eye(p, dtype=torch.float64)
    ours = _core.spd_inverse(A)
    ref = torch.linalg.inv(A)
    rel = (ours - ref).abs().amax((1, 2)) / ref.abs().amax((1, 2))
    assert float(rel.max()) < 1e-8


def test_spd_inverse_falls_back_on_singular_matrices():
    A = _spd_batch(5, 12)
    A[2] = 0.0  # singular: the blocked elimination divides by zero
    inv = _core.spd_inverse(A)
    assert torch.isfinite(inv).all()
    np.testing.assert_allclose(inv[0].numpy(), torch.linalg.inv(A[0]).numpy(), rtol=1e-8)


def test_shared_hessian_equals_explicit_schur_complement():
    K, p = 30, 9
    G = _spd_batch(K, p, seed=1)
    local_pen = torch.linspace(0.5, 4.0, p, dtype=torch.float64)
    shared_pen = torch.full((p,), 0.1, dtype=torch.float64)
    A = G + torch.diag(local_pen)
    explicit = G.sum(0) + torch.diag(shared_pen) - (G @ torch.linalg.solve(A, G)).sum(0)
    inv, inv_sum = _core.segment_inverses(G, local_pen)
    np.testing.assert_allclose(inv_sum.numpy(), torch.linalg.inv(A).sum(0).numpy(), rtol=1e-9)
    S = _core.shared_hessian(inv_sum, K, local_pen, shared_pen)
    np.testing.assert_allclose(S.numpy(), explicit.numpy(), rtol=1e-8, atol=1e-8)


def test_warm_start_reaches_the_cold_start_optimum():
    """A start from another fold's fit, including an intercept that ran off on data without
    events, must end at the same optimum as the cold start."""
    rng = np.random.default_rng(3)
    K, d = 40, 5
    seg = np.repeat(np.arange(K), rng.integers(30, 200, size=K))
    X = torch.tensor(rng.normal(size=(len(seg), d)))
    y = (rng.random(len(seg)) < 0.3).astype(float)
    y[seg == 0] = 0.0  # no events: intercept heads toward -inf
    cold = _core.fit_segment_glm(X, y, seg, K, pooled=True, shrinkage=5.0, tol=1e-10)
    y_other = y.copy()
    y_other[seg == 1] = 0.0  # in the "other fold" item 1 had no events
    other = _core.fit_segment_glm(X, y_other, seg, K, pooled=True, shrinkage=5.0)
    layout = _core.make_layout(seg, K)
    Xb, yb = _core.pad_design(layout, X), _core.pad(layout, torch.tensor(y))
    blocks = torch.arange(len(Xb))
    local_pen, shared_pen = _core.penalties(d + 1, True, 1.0, 5.0, 1e-3, torch.float64, "cpu")
    warm = _core.fit_glm(Xb, yb, layout.valid.double(), blocks, layout.block_cell, K,
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
    real_pass = _core._pass

    def counting_pass(*args):
        hessian_passes.append(args[8])
        return real_pass(*args)

    monkeypatch.setattr(_core, "_pass", counting_pass)
    fits, default = {}, _core.HESSIAN_STEPS
    for steps in (default, 10_000):
        monkeypatch.setattr(_core, "HESSIAN_STEPS", steps)
        hessian_passes.clear()
        fits[steps] = _core.fit_segment_glm(X, y, seg, K, pooled=True, shrinkage=2.0)
        assert fits[steps].converged
        gradient_only = hessian_passes[:-1].count(False)  # the last pass needs only losses
        assert gradient_only >= 2 if steps == default else gradient_only == 0
    chord, newton = (torch.cat([f.coef, f.shared[None]]) for f in fits.values())
    assert float((chord - newton).abs().max()) < tol * max(1.0, float(newton.abs().max()))


def test_pad_design_standardises_and_gathers_a_row_subset_without_copying():
    rng = np.random.default_rng(2)
    X = torch.tensor(rng.normal(3.0, 2.0, size=(500, 4)))
    rows = np.sort(rng.choice(500, 300, replace=False))
    cells = rng.integers(0, 7, 300)
    layout = _core.make_layout(cells, 7, block_size=8)
    center, scale = X.mean(0).numpy(), (1 / X.std(0)).numpy()
    ours = _core.pad_design(layout, X, center, scale, index=torch.as_tensor(rows))
    expected = _core.pad_design(layout, (X[rows] - X.mean(0)) / X.std(0))
    torch.testing.assert_close(ours, expected)
    assert bool((ours[~layout.valid] == 0).all())  # padding stays zero, intercept included


def test_raw_design_with_its_moments_equals_the_standardised_design():
    import causalrec as cr
    from causalrec.estimate.design import build_design
    rng = np.random.default_rng(6)
    n = 2_000
    values = rng.normal(size=(n, 3)) * [1.0, 50.0, 1e-3] + [0.0, 1e4, -2.0]
    df = pd.DataFrame(values, columns=["a", "b", "c"]).assign(
        const=1.0, item=rng.integers(0, 5, n), t=rng.integers(0, 2, n), y=rng.random(n))
    log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                            confounders=["a", "b", "const", "c"])
    standard = build_design(log, dtype=np.float64)
    assert standard.dropped == ["const"] and standard.columns == ["a", "b", "c"]
    np.testing.assert_allclose(standard.X.mean(0), 0.0, atol=1e-10)
    np.testing.assert_allclose(standard.X.std(0), 1.0, rtol=1e-10)
    for contiguous in (True, False):
        raw = build_design(log, dtype=np.float64, standardise=False, contiguous=contiguous)
        assert raw.X.flags.c_contiguous or not contiguous
        np.testing.assert_allclose((raw.X - raw.center) * raw.scale, standard.X, atol=1e-10)


def test_buffer_helpers():
    """``empty`` gives writable CPU buffers of the asked dtype (numpy-backed); ``read_only_tensor``
    reads a read-only frame view without torch's warning; chunk budgets follow the device."""
    import warnings
    for dtype in (torch.float32, torch.float64, torch.int64):
        buf = _core.empty((3, 4), dtype, "cpu")
        assert buf.shape == (3, 4) and buf.dtype == dtype
        buf.fill_(2)
        assert int(buf.sum()) == 24
    frame = pd.DataFrame(np.arange(6.0).reshape(3, 2))
    values = frame.to_numpy()
    values.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = _core.read_only_tensor(values, torch.float32)
    np.testing.assert_array_equal(t.numpy(), values)
    assert _core.chunk_bytes("cpu") == _core.CHUNK_BYTES
    assert _core.chunk_bytes(torch.device("cuda")) == _core.GPU_CHUNK_BYTES


def test_row_hash_equals_pandas():
    rng = np.random.default_rng(0)
    n = 5_003
    df = pd.DataFrame({
        "i32": rng.integers(-5, 5, n).astype(np.int32), "f32": rng.normal(size=n).astype(np.float32),
        "f64": np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
        "zeros": np.where(rng.random(n) < 0.5, -0.0, 0.0), "flag": rng.random(n) < 0.5,
        "u64": rng.integers(0, 2**40, n).astype(np.uint64), "u8": rng.integers(0, 200, n).astype(np.uint8),
        "text": rng.choice(["a", "bb", None], n), "cat": pd.Categorical(rng.choice(["p", "q"], n)),
        "nullable": pd.array(rng.integers(0, 3, n), dtype="Int64"),
        "string": pd.array(rng.choice(["u", "v"], n), dtype="string")})
    df = pd.concat([df, df[["f32"]]], axis=1)  # a duplicated column name
    expected = pd.util.hash_pandas_object(df, index=False).to_numpy()
    np.testing.assert_array_equal(row_hash(df, chunk_rows=1000), expected)


def test_stratum_order_equals_lexsort():
    rng = np.random.default_rng(1)
    n = 20_000
    stratum = rng.integers(0, 50, n)
    key = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    outcome = rng.random(n)
    np.testing.assert_array_equal(_stratum_order(stratum, key, outcome),
                                  np.lexsort((outcome, key, stratum)))
    key[:100] = key[100:200]  # duplicated content: the outcome must break the ties
    stratum[:100] = stratum[100:200]
    np.testing.assert_array_equal(_stratum_order(stratum, key, outcome),
                                  np.lexsort((outcome, key, stratum)))
    key[200:300] = key[300:400] ^ np.uint64(1)  # keys equal but for their lowest bit
    stratum[200:300] = stratum[300:400]
    np.testing.assert_array_equal(_stratum_order(stratum, key, outcome),
                                  np.lexsort((outcome, key, stratum)))


def test_mix_is_the_splitmix64_finaliser():
    keys = np.array([0, 1, 7, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (keys ^ (keys >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        expected = h ^ (h >> np.uint64(31))
    np.testing.assert_array_equal(_mix(keys), expected)
    np.testing.assert_array_equal(keys, np.array([0, 1, 7, 2**63 + 5, 2**64 - 1], dtype=np.uint64))
