"""The data passes of the GLM solver: per-segment loss, gradient and Gram matrix over the
blocked rows (``_pass``), and mean predictions (``predict_glm``), chunked to bounded memory."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import chunk_bytes

__all__ = ["GLMFit", "predict_glm", "block_grams"]


@dataclass
class GLMFit:
    """Coefficients of segment k are ``shared + local[k]`` (intercept first)."""

    shared: torch.Tensor  # (p,)
    local: torch.Tensor   # (n_segments, p)
    family: str
    n_iter: int
    segment_converged: torch.Tensor  # (n_segments,) bool

    @property
    def coef(self) -> torch.Tensor:
        return self.local + self.shared

    @property
    def converged(self) -> bool:
        return bool(self.segment_converged.all())


@dataclass
class _Blocks:
    """The blocked data a fit reads: design with intercept first, outcome, weight (0 on
    padding), an optional offset of the linear predictor, and each block's segment."""

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    offset: torch.Tensor | None
    block_seg: torch.Tensor
    n_seg: int
    family: str


def _mean_var_loss(eta, y, family, need_var=True):
    """Mean, variance (None unless ``need_var``: only Hessians read it) and loss per row."""
    if family == "logistic":
        mu = torch.sigmoid(eta)
        return mu, mu * (1 - mu) if need_var else None, torch.nn.functional.softplus(eta) - y * eta
    return eta, torch.ones_like(eta) if need_var else None, 0.5 * (y - eta) ** 2


def _chunks(blocks: torch.Tensor, block_size: int, p: int):
    """Slices over runs of consecutive block indices (views, no copies), each run cut into
    pieces of bounded memory; layouts that keep each fit's cells together make runs long."""
    per_block = block_size * p * 4 * 3 + p * p * 4 * 2
    step = max(1, chunk_bytes(blocks.device) // per_block)
    if len(blocks) == 0:
        return
    idx = blocks.cpu()
    breaks = torch.nonzero(idx[1:] - idx[:-1] != 1).squeeze(1) + 1
    starts = torch.cat([idx[:1], idx[breaks]]).tolist()
    ends = (torch.cat([idx[breaks - 1], idx[-1:]]) + 1).tolist()
    for start, end in zip(starts, ends):
        for a in range(start, end, step):
            yield slice(a, min(a + step, end))


def _weighted_sums(data: _Blocks, blocks, minus_offset: bool):
    """Per segment, the rows' weight sum and weighted sum of y (of y - offset when
    ``minus_offset`` and there is an offset), a chunk of blocks at a time: views, no gathered copies of the rows (each block's
    sums are added in block order, as one ``segment_sum`` over the gathered blocks does)."""
    opts = dict(dtype=data.X.dtype, device=data.X.device)
    w_seg, wy_seg = torch.zeros(data.n_seg, **opts), torch.zeros(data.n_seg, **opts)
    for chunk in _chunks(blocks, data.X.shape[1], data.X.shape[-1]):
        w, seg = data.w[chunk], data.block_seg[chunk]
        y = data.y[chunk] if data.offset is None or not minus_offset \
            else data.y[chunk] - data.offset[chunk]
        w_seg.index_add_(0, seg, w.sum(1))
        wy_seg.index_add_(0, seg, (w * y).sum(1))
    return w_seg, wy_seg


def _linear_predictor(X, coef, offset=None):
    """X (n, B, p) times each block's coefficients (n, p) -> (n, B). Written as row-vector
    products: the matrix-vector form ``bmm(X, coef[..., None])`` runs at half the speed."""
    eta = torch.bmm(coef.unsqueeze(1), X.mT).squeeze(1)
    return eta if offset is None else eta + offset


def _pass(data: _Blocks, blocks, coef, *, need_hessian, out=None):
    """Gradient / Hessian pass over ``blocks``: per-segment loss, gradient and (optionally)
    Gram matrix. Gradient and Gram matrix are views into one (n_seg, p, p + 1) accumulator;
    ``out`` lends one that earlier passes used (their results are then overwritten)."""
    Xb = data.X
    p, n_seg = Xb.shape[-1], data.n_seg
    opts = dict(dtype=Xb.dtype, device=Xb.device)
    loss = torch.zeros(n_seg, **opts)
    grad = torch.zeros(n_seg, p, **opts)
    both = None
    if need_hessian:
        both = torch.zeros(n_seg, p, p + 1, **opts) if out is None else out.zero_()
    chunks = list(_chunks(blocks, Xb.shape[1], p))
    if need_hessian and chunks:  # buffers reused by every chunk
        longest = max(c.stop - c.start for c in chunks)
        Z_buf = torch.empty((longest,) + Xb.shape[1:2] + (p + 1,), **opts)
        G_buf = torch.empty(longest, p, p + 1, **opts)
    for chunk in chunks:
        X, y, w = Xb[chunk], data.y[chunk], data.w[chunk]
        seg = data.block_seg[chunk]
        offset = None if data.offset is None else data.offset[chunk]
        eta = _linear_predictor(X, coef[seg], offset)
        mu, var, row_loss = _mean_var_loss(eta, y, data.family, need_hessian)
        loss.index_add_(0, seg, (w * row_loss).sum(1))
        residual = w * (mu - y)
        if not need_hessian:
            grad.index_add_(0, seg, torch.bmm(residual.unsqueeze(1), X).squeeze(1))
            continue
        # one bmm gives the Gram matrix and the gradient: X' [X * w var | w (mu - y)]
        Z, G = Z_buf[:len(X)], G_buf[:len(X)]
        torch.mul(X, (w * var).unsqueeze(-1), out=Z[..., :p])
        Z[..., p] = residual
        both.index_add_(0, seg, torch.bmm(X.mT, Z, out=G))
    if need_hessian:
        return loss, both[..., p], both[..., :p]
    return loss, grad, None


def predict_glm(fit: GLMFit, Xb, blocks, block_seg, offset=None) -> torch.Tensor:
    """Mean predictions (probabilities for logistic) on ``blocks``: (len(blocks), B)."""
    coef = fit.coef
    out = []
    for chunk in _chunks(blocks, Xb.shape[1], Xb.shape[-1]):
        eta = _linear_predictor(Xb[chunk], coef[block_seg[chunk]],
                                None if offset is None else offset[chunk])
        out.append(torch.sigmoid(eta) if fit.family == "logistic" else eta)
    return torch.cat(out) if out else Xb.new_zeros((0, Xb.shape[1]))


def block_grams(Xb, blocks, group, n_groups: int) -> torch.Tensor:
    """Per group, the sum over ``blocks`` of X_b' X_b ((n_groups, p, p); ``group``: the
    group of every block of Xb, as ``block_seg``). For a design whose row weight is its intercept column (1 on rows, 0 on
    padding, whose rows are zero) this is each group's weighted Gram matrix X' W X, the
    Hessian of a fit at a linear predictor constant in the group, divided by its variance."""
    p = Xb.shape[-1]
    out = torch.zeros(n_groups, p, p, dtype=Xb.dtype, device=Xb.device)
    chunks = list(_chunks(blocks, Xb.shape[1], p))
    if chunks:
        buf = torch.empty(max(c.stop - c.start for c in chunks), p, p, dtype=Xb.dtype,
                          device=Xb.device)
        for chunk in chunks:
            X = Xb[chunk]
            out.index_add_(0, group[chunk], torch.bmm(X.mT, X, out=buf[:len(X)]))
    return out
