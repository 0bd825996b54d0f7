"""``SegmentGLM``: the one door to the batched segment GLM.

A model is fitted either from row-indexed arrays (``fit`` / ``predict``) or, when several
models share one padded design (the effect estimator fits a propensity and two outcome models
per fold on the same rows), from a ``BlockedDesign`` (``fit_blocks`` / ``predict_blocks``), so
the design is padded once.
"""
from __future__ import annotations


import numpy as np
import torch

from ..base import BaseEstimator
from ..utils.validation import Boolean, InstanceOf, Integer, Interval, Options
from .layout import (Layout, chunk_bytes, make_layout, pad, pad_design, read_only_tensor,
                     resolve_device, resolve_dtype, unpad)
from .linalg import robust_spd_inverse, segment_inverses, shared_hessian
from .passes import GLMFit, _Blocks, _chunks, _linear_predictor, _mean_var_loss, _pass, predict_glm
from .solver import fit_glm

__all__ = ["SegmentGLM", "BlockedDesign", "segment_moments"]

# local penalty of columns whose coefficient is shared by every segment (no deviations)
SHARED_ONLY = 1e8
# largest leverage a leave-one-out prediction uses (``loo_predict_blocks``): residuals are
# inflated at most 1 / (1 - 0.99) = 100-fold
MAX_LEVERAGE = 0.99


class BlockedDesign:
    """Rows of X padded into the block layout of ``cells`` (intercept column first).

    ``cell_segment`` maps each cell to its segment (default: cells are segments). ``center`` /
    ``scale`` standardise the columns on the way; ``index`` maps the layout's rows to rows of
    X (a subset of X without copying it); ``block_size`` fixes the layout's block size (a
    sharded fit passes the whole log's choice). X may be a row source instead of a tensor
    (see ``pad_design``): the padded design is then the only copy of the rows, on ``device``.
    """

    def __init__(self, X, cells, n_cells: int, *, cell_segment=None,
                 center=None, scale=None, index=None, block_size=None, device=None):
        self.device = X.device if torch.is_tensor(X) else torch.device(device or "cpu")
        self.layout: Layout = make_layout(cells, n_cells, block_size=block_size, device=self.device)
        self.X = pad_design(self.layout, X, center, scale, index=index)
        # the intercept column is 1 on rows and 0 on padding: the rows' weight, as a view
        self.weight = self.X[..., 0]
        self.block_cell = self.layout.block_cell
        seg_of_cell = (torch.arange(n_cells, device=self.device) if cell_segment is None
                       else torch.as_tensor(cell_segment, device=self.device))
        self.block_seg = seg_of_cell[self.block_cell]

    @property
    def n_blocks(self) -> int:
        return self.X.shape[0]

    def pad(self, values) -> torch.Tensor:
        """Row values (in the layout's row numbering) -> blocked (n_blocks, block_size)."""
        values = torch.as_tensor(values, dtype=self.X.dtype, device=self.device)
        return pad(self.layout, values)

    def blocks(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Indices of the blocks where ``mask`` (over blocks) holds; all when None."""
        if mask is None:
            return torch.arange(self.n_blocks, device=self.device)
        return torch.nonzero(mask).squeeze(1)

    def unpad(self, blocked, blocks=None, out=None) -> torch.Tensor:
        return unpad(self.layout, blocked, blocks, out=out)


def segment_moments(X, y, weight, segment, n_segments: int):
    """Per segment, with X1 = [1, X]: X1' W X1 (n_segments, p, p), X1' W y (n_segments, p)
    and y' W y (n_segments,), from one blocked pass (e.g. the sufficient statistics of many
    ridge regressions, refitted for other penalties without touching the rows again)."""
    X = torch.as_tensor(X)
    design = BlockedDesign(X, np.asarray(segment, dtype=np.int64), n_segments)
    opts = dict(dtype=X.dtype, device=X.device)
    data = _Blocks(design.X, design.pad(torch.as_tensor(y, **opts)),
                   design.weight * design.pad(torch.as_tensor(weight, **opts)), None,
                   design.block_seg, n_segments, "gaussian")
    zero = torch.zeros(n_segments, design.X.shape[-1], **opts)
    # a Gaussian pass at coefficients 0: loss 1/2 sum w y^2, gradient -X'Wy, Gram X'WX
    loss, grad, gram = _pass(data, design.blocks(), zero, need_hessian=True)
    return gram.clone(), -grad.clone(), 2 * loss


class SegmentGLM(BaseEstimator):
    """Penalised logistic or linear model for many segments at once.

    Parameters
    ----------
    family : "logistic" or "gaussian".
    pooled : True: coefficients are shared + segment deviation, deviations shrunk toward zero
        by ``shrinkage`` (small segments borrow strength); False: independent models per
        segment with ridge ``penalty`` on the slopes (scikit-learn's ``C = 1 / penalty``).
    penalty, shrinkage : ridge penalties (see ``pooled``).
    intercept_penalty : ridge on segment intercepts (per segment) or intercept deviations.
    shared_intercept_penalty : ridge on the shared intercept (pooled): a weak N(0, 1) prior
        keeps it identified next to almost-free segment intercepts.
    shared_penalty : ridge on the shared slopes (pooled). Near zero by default: with many rows
        the data identify them; with few rows (one small item) the estimator chooses it by
        out-of-fold loss (``causalrec.estimate.nuisance.cross_fit_tuned``).
    shared_columns : indices (into X's columns) whose coefficients are shared by every segment,
        with no segment deviation (pooled only; e.g. a group indicator's logit shift).
    max_iter, tol : Newton-type steps at most, and the step size that counts as converged.
    device, dtype : where and in which precision the fit runs.

    Attributes
    ----------
    coef_ : (n_segments, d + 1) numpy array, intercept first; shared_coef_ : (d + 1,).
    converged_ : (n_segments,) bool; n_iter_ : steps taken; fit_ : the solver's ``GLMFit``.
    """

    _parameter_constraints = {
        "family": [Options("logistic", "gaussian")],
        "pooled": [Boolean()],
        "penalty": [Interval(0, None, "left")],
        "shrinkage": [Interval(0, None, "neither")],
        "intercept_penalty": [Interval(0, None, "left")],
        "shared_intercept_penalty": [Interval(0, None, "neither")],
        "shared_penalty": [Interval(0, None, "neither")],
        "shared_columns": [InstanceOf((tuple, list, np.ndarray), "a sequence of column indices")],
        "max_iter": [Integer(1, None)],
        "tol": [Interval(0, None, "neither")],
        "device": [InstanceOf((str, torch.device), "a device name or a torch.device")],
        "dtype": [Options("float32", "float64", torch.float32, torch.float64)],
    }

    def __init__(self, *, family="logistic", pooled=True, penalty=1.0, shrinkage=10.0,
                 intercept_penalty=1e-3, shared_intercept_penalty=1.0, shared_penalty=1e-4,
                 shared_columns=(), max_iter=50, tol=1e-7, device="cpu", dtype="float64"):
        self.family = family
        self.pooled = pooled
        self.penalty = penalty
        self.shrinkage = shrinkage
        self.intercept_penalty = intercept_penalty
        self.shared_intercept_penalty = shared_intercept_penalty
        self.shared_penalty = shared_penalty
        self.shared_columns = shared_columns
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype

    # ------------------------------------------------------------------ penalties
    def _penalties(self, p: int, dtype, device):
        """(local, shared) ridge penalty vectors over the p = d + 1 coefficients."""
        local = torch.full((p,), float(self.shrinkage if self.pooled else self.penalty),
                           dtype=dtype, device=device)
        local[0] = self.intercept_penalty
        shared = torch.full((p,), float(self.shared_penalty), dtype=dtype, device=device)
        shared[0] = self.shared_intercept_penalty
        columns = [int(c) for c in self.shared_columns]
        if columns:
            if not self.pooled:
                raise ValueError("shared_columns needs pooled=True")
            if min(columns) < 0 or max(columns) >= p - 1:
                raise ValueError(f"shared_columns must index X's {p - 1} columns, got {columns}")
            local[[c + 1 for c in columns]] = SHARED_ONLY
        return local, shared

    # ------------------------------------------------------------------ blocked interface
    def fit_blocks(self, design: BlockedDesign, y_blocked, blocks, *, n_segments: int,
                   weight_blocked=None, offset_blocked=None, init: "SegmentGLM | None" = None,
                   reducer=None, first_gram=None) -> "SegmentGLM":
        """Fit on ``blocks`` of a padded design (``y_blocked`` etc. as ``design.pad`` gives);
        ``first_gram``: the segments' X' W X over ``blocks`` (``fit_glm``), or None."""
        self._validate_params()
        Xb = design.X
        local_pen, shared_pen = self._penalties(Xb.shape[-1], Xb.dtype, Xb.device)
        weight = design.weight if weight_blocked is None else design.weight * weight_blocked
        self.fit_: GLMFit = fit_glm(
            Xb, y_blocked, weight, blocks, design.block_seg, n_segments, family=self.family,
            pooled=self.pooled, local_penalty=local_pen, shared_penalty=shared_pen,
            max_iter=self.max_iter, tol=self.tol, init=None if init is None else init.fit_,
            offset=offset_blocked, reducer=reducer,
            first_gram=None if weight_blocked is not None else first_gram)
        self._penalty_vectors = (local_pen, shared_pen)
        self.coef_ = self.fit_.coef.cpu().numpy()
        self.shared_coef_ = self.fit_.shared.cpu().numpy()
        self.converged_ = self.fit_.segment_converged.cpu().numpy()
        self.n_iter_ = self.fit_.n_iter
        return self

    def predict_blocks(self, design: BlockedDesign, blocks, offset_blocked=None) -> torch.Tensor:
        """Mean predictions on ``blocks``: (len(blocks), block_size)."""
        self._check_is_fitted("fit_")
        return predict_glm(self.fit_, design.X, blocks, design.block_seg, offset_blocked)

    def shared_covariance(self, design: BlockedDesign, y_blocked, blocks, *, coef=None,
                          reducer=None) -> np.ndarray:
        """Posterior covariance of the shared coefficients (pooled): the inverse of the Schur
        complement of the penalised Hessian after eliminating the segment deviations, at the
        fitted coefficients or at ``coef = (shared, local)``; ``reducer`` sums the segment
        pieces over solvers holding other segments (as in ``fit_blocks``)."""
        if coef is None:
            self._check_is_fitted("fit_")
            coef = (self.fit_.shared, self.fit_.local)
        data = _Blocks(design.X, y_blocked, design.weight, None, design.block_seg,
                       len(coef[1]), self.family)
        return self._hessian_inverses(data, blocks, coef, reducer)[1].cpu().numpy()

    def _hessian_inverses(self, data: _Blocks, blocks, coef, reducer=None):
        """At ``coef = (shared, local)``: the segments' A_k^-1 = (G_k + L)^-1 (float64) and,
        pooled, the shared coefficients' covariance S^-1 (the inverse Schur complement, its
        segment sums reduced over solvers), else None."""
        shared, local = coef
        Xb = data.X
        local_pen, shared_pen = self._penalties(Xb.shape[-1], torch.float64, Xb.device)
        gram = _pass(data, blocks, local + shared, need_hessian=True)[2].to(torch.float64)
        inv, inv_sum = segment_inverses(gram, local_pen)
        if not self.pooled:
            return inv, None
        n_seg = len(gram)
        if reducer is not None:
            inv_sum = reducer.sum(inv_sum)
            n_seg = int(reducer.sum(torch.tensor([float(n_seg)], dtype=torch.float64))[0])
        S = shared_hessian(inv_sum, n_seg, local_pen, shared_pen)
        return inv, robust_spd_inverse(S.unsqueeze(0))[0]

    def coef_covariance(self, inv, shared_cov) -> torch.Tensor:
        """Covariance of each segment's coefficients shared + local_k under the penalised
        Hessian (float64, (K, p, p)), from ``_hessian_inverses``. Block elimination of the
        deviations gives Var(local_k) = A^-1 + A^-1 G S^-1 G A^-1, Cov(local_k, shared) =
        -A^-1 G S^-1, and with G = A - L: C_k = A_k^-1 + A_k^-1 L S^-1 L A_k^-1."""
        if shared_cov is None:
            return inv
        lam = self._penalties(inv.shape[-1], torch.float64, inv.device)[0]
        M = inv * lam  # A_k^-1 L (columns scaled)
        return inv + M @ shared_cov @ M.mT

    def loo_predict_blocks(self, design: BlockedDesign, y_blocked, blocks, *,
                           weight_blocked=None, offset_blocked=None, reducer=None) -> torch.Tensor:
        """Approximate leave-one-out means on ``blocks`` (the blocks the model was fitted on,
        with the same outcome, weight and offset): (len(blocks), B), float64.

        One Newton step from the fit without row i, by Sherman-Morrison:
        eta_-i = eta_i - h_i / (1 - h_i) (y_i - mu_i) / var_i with the leverage
        h_i = w_i var_i x_i' C_k x_i (``coef_covariance``); exact for a Gaussian model with
        fixed penalties. ``reducer`` as in ``fit_blocks`` (pooled: the Schur complement is the
        whole model's)."""
        self._check_is_fitted("fit_")
        fit = self.fit_
        weight = design.weight if weight_blocked is None else design.weight * weight_blocked
        data = _Blocks(design.X, y_blocked, weight, offset_blocked, design.block_seg,
                       len(fit.local), self.family)
        C = self.coef_covariance(*self._hessian_inverses(data, blocks, (fit.shared, fit.local),
                                                         reducer))
        coef = fit.coef.to(torch.float64)
        out = []
        for chunk in _chunks(blocks, design.X.shape[1], design.X.shape[-1]):
            X, seg = design.X[chunk].to(torch.float64), design.block_seg[chunk]
            at = lambda v: None if v is None else v[chunk].to(torch.float64)
            eta = _linear_predictor(X, coef[seg], at(offset_blocked))
            mu, var, _ = _mean_var_loss(eta, at(y_blocked), self.family)
            wq = (torch.bmm(X, C[seg]) * X).sum(-1) * at(weight)  # w_i x_i' C_k x_i
            # a leverage near 1: the row alone pins its coefficients (an item with about as
            # many rows as weakly penalised columns), where one Newton step is no guide and
            # h / (1 - h) unbounded; capped (and rounding can push h past 1)
            h = (wq * var).clamp(0, MAX_LEVERAGE)
            eta = eta - wq / (1 - h) * (at(y_blocked) - mu)  # h / var: no division by var
            out.append(torch.sigmoid(eta) if self.family == "logistic" else eta)
        if not out:
            return design.X.new_zeros((0, design.X.shape[1]), dtype=torch.float64)
        return torch.cat(out)

    # ------------------------------------------------------------------ row interface
    def fit(self, X, y, segment, weight=None, offset=None, *, n_segments: int | None = None,
            reducer=None) -> "SegmentGLM":
        """Fit from row arrays: X (n, d) without an intercept column, y (n,), segment (n,)
        integer codes in [0, n_segments), optional row weight and linear-predictor offset."""
        self._validate_params()
        X = self._as_tensor(X)
        segment = np.asarray(torch.as_tensor(segment).cpu(), dtype=np.int64)
        if X.ndim != 2 or len(segment) != len(X):
            raise ValueError(f"X must be (n, d) with one segment per row; got X {tuple(X.shape)} "
                             f"and {len(segment)} segments")
        n_segments = int(segment.max()) + 1 if n_segments is None and len(segment) else int(n_segments or 0)
        if len(segment) and (segment.min() < 0 or segment.max() >= n_segments):
            raise ValueError(f"segment codes must lie in [0, {n_segments})")
        design = BlockedDesign(X, segment, n_segments)
        pad_rows = lambda v: None if v is None else design.pad(self._as_tensor(v))
        return self.fit_blocks(design, pad_rows(y), design.blocks(), n_segments=n_segments,
                               weight_blocked=pad_rows(weight), offset_blocked=pad_rows(offset),
                               reducer=reducer)

    def loo_predict(self, X, y, segment, weight=None, offset=None, *, reducer=None) -> np.ndarray:
        """Approximate leave-one-out mean of each row of the fit's own data (the arguments
        ``fit`` was given): ``loo_predict_blocks`` for row arrays."""
        self._check_is_fitted("fit_")
        X = self._as_tensor(X)
        design = BlockedDesign(X, np.asarray(segment, dtype=np.int64), len(self.fit_.local))
        pad_rows = lambda v: None if v is None else design.pad(self._as_tensor(v))
        blocks = design.blocks()
        blocked = self.loo_predict_blocks(design, pad_rows(y), blocks, reducer=reducer,
                                          weight_blocked=pad_rows(weight),
                                          offset_blocked=pad_rows(offset))
        return design.unpad(blocked, blocks).cpu().numpy()

    def decision_function(self, X, segment, offset=None) -> np.ndarray:
        """Linear predictor of each row under its segment's coefficients."""
        self._check_is_fitted("fit_")
        X = self._as_tensor(X)
        coef = self.fit_.coef
        seg = torch.as_tensor(np.asarray(segment, dtype=np.int64), device=coef.device)
        out = torch.empty(len(X), dtype=coef.dtype, device=coef.device)
        step = max(1, chunk_bytes(coef.device) // (8 * max(1, X.shape[1] + 1)))
        for a in range(0, len(X), step):  # row chunks: no (n, p) gather of coefficients
            c = coef[seg[a:a + step]]
            out[a:a + step] = (X[a:a + step] * c[:, 1:]).sum(1) + c[:, 0]
        if offset is not None:
            out += self._as_tensor(offset)
        return out.cpu().numpy()

    def predict(self, X, segment, offset=None) -> np.ndarray:
        """Mean of each row: a probability (logistic) or the linear predictor (gaussian)."""
        eta = self.decision_function(X, segment, offset)
        return 1.0 / (1.0 + np.exp(-eta)) if self.family == "logistic" else eta

    def _as_tensor(self, values) -> torch.Tensor:
        return read_only_tensor(np.asarray(values) if not torch.is_tensor(values) else values,
                                resolve_dtype(self.dtype), resolve_device(self.device))
