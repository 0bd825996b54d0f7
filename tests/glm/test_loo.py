"""Leave-one-out predictions of the segment GLM (``SegmentGLM.loo_predict``): the leverages
against an explicit inverse of the full penalised Hessian, and exact refits without each row
(a Gaussian ridge, where the one Newton step is exact)."""
import numpy as np
import pytest
import torch

from causalrec.glm import BlockedDesign, SegmentGLM
from causalrec.glm.passes import _Blocks


def tiny(family, seed=0):
    rng = np.random.default_rng(seed)
    K, d = 3, 2
    seg = np.repeat(np.arange(K), [9, 12, 15])
    X = rng.normal(size=(len(seg), d))
    eta = X @ np.array([0.8, -0.5]) + 0.3 * rng.normal(size=(K, d))[seg].sum(1) * X[:, 0]
    y = ((rng.random(len(seg)) < 1 / (1 + np.exp(-eta))).astype(float) if family == "logistic"
         else eta + rng.normal(size=len(seg)))
    return X, y, seg, K


def explicit_leverages(model, X, seg, K):
    """w var x' Cov(coef_k) x from the full penalised Hessian over (shared, local_1..K)."""
    Z = np.column_stack([np.ones(len(X)), X])
    p = Z.shape[1]
    coef = model.fit_.coef.numpy()
    eta = (Z * coef[seg]).sum(1)
    var = 1 / (1 + np.exp(-eta)) * (1 - 1 / (1 + np.exp(-eta))) if model.family == "logistic" \
        else np.ones(len(X))
    local, shared = (v.numpy() for v in model._penalties(p, torch.float64, "cpu"))
    H = np.zeros(((K + 1) * p, (K + 1) * p))
    H[:p, :p] = np.diag(shared)
    for k in range(K):
        G = (Z[seg == k] * var[seg == k, None]).T @ Z[seg == k]
        b = slice((k + 1) * p, (k + 2) * p)
        H[:p, :p] += G
        H[:p, b] = H[b, :p] = G
        H[b, b] = G + np.diag(local)
    Hinv = np.linalg.inv(H)
    h = np.empty(len(X))
    for i in range(len(X)):
        T = np.zeros((K + 1) * p)  # eta_i as a function of (shared, local)
        T[:p] = Z[i]
        T[(seg[i] + 1) * p:(seg[i] + 2) * p] = Z[i]
        h[i] = var[i] * T @ Hinv @ T
    return h


@pytest.mark.parametrize("family", ["gaussian", "logistic"])
@pytest.mark.parametrize("pooled", [True, False])
def test_coefficient_covariance_gives_the_full_hessian_leverages(family, pooled):
    X, y, seg, K = tiny(family)
    model = SegmentGLM(family=family, pooled=pooled, shrinkage=2.0, shared_penalty=0.5,
                       penalty=0.7, tol=1e-12).fit(X, y, seg, n_segments=K)
    design = BlockedDesign(torch.as_tensor(X), seg, K)
    data = _Blocks(design.X, design.pad(torch.as_tensor(y)), design.weight, None,
                   design.block_seg, K, family)
    C = model.coef_covariance(*model._hessian_inverses(
        data, design.blocks(), (model.fit_.shared, model.fit_.local)))
    Z = np.column_stack([np.ones(len(X)), X])
    coef = model.fit_.coef.numpy()
    eta = (Z * coef[seg]).sum(1)
    var = np.ones(len(X)) if family == "gaussian" else \
        1 / (1 + np.exp(-eta)) * (1 - 1 / (1 + np.exp(-eta)))
    h = var * np.einsum("ij,ijk,ik->i", Z, C.numpy()[seg], Z)
    if pooled:
        expected = explicit_leverages(model, X, seg, K)
    else:  # independent segments: the per-segment ridge inverse
        local = model._penalties(Z.shape[1], torch.float64, "cpu")[0].numpy()
        expected = np.array([var[i] * Z[i] @ np.linalg.inv(
            (Z[seg == seg[i]] * var[seg == seg[i], None]).T @ Z[seg == seg[i]] + np.diag(local))
            @ Z[i] for i in range(len(X))])
    np.testing.assert_allclose(h, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("pooled", [True, False])
def test_gaussian_loo_predictions_equal_refits_without_each_row(pooled):
    X, y, seg, K = tiny("gaussian", seed=1)
    # an intercept penalty of 0: the solver centres y (on all rows, or the segment's), and
    # with an unpenalised intercept the centring cannot move the fit, so the one Newton step
    # is exact up to the solver's tolerance
    options = dict(family="gaussian", pooled=pooled, shrinkage=2.0, shared_penalty=0.5,
                   penalty=0.7, intercept_penalty=0.0, tol=1e-12)
    model = SegmentGLM(**options).fit(X, y, seg, n_segments=K)
    loo = model.loo_predict(X, y, seg)
    exact = np.empty(len(X))
    for i in range(len(X)):
        keep = np.arange(len(X)) != i
        refit = SegmentGLM(**options).fit(X[keep], y[keep], seg[keep], n_segments=K)
        exact[i] = refit.predict(X[i:i + 1], seg[i:i + 1])[0]
    np.testing.assert_allclose(loo, exact, rtol=0, atol=1e-8)
    assert np.abs(loo - model.predict(X, seg)).min() > 0  # the rows' own y left out


def test_logistic_loo_predictions_are_close_to_refits():
    """One Newton step: close to, not equal to, the refit (error O(h^2) of the step)."""
    X, y, seg, K = tiny("logistic", seed=2)
    options = dict(family="logistic", pooled=True, shrinkage=2.0, shared_penalty=0.5, tol=1e-12)
    model = SegmentGLM(**options).fit(X, y, seg, n_segments=K)
    loo = model.loo_predict(X, y, seg)
    exact = np.array([SegmentGLM(**options).fit(np.delete(X, i, 0), np.delete(y, i),
                                                np.delete(seg, i), n_segments=K)
                      .predict(X[i:i + 1], seg[i:i + 1])[0] for i in range(len(X))])
    plain = model.predict(X, seg)
    assert np.abs(loo - exact).max() < 0.1 * np.abs(plain - exact).max()
