"""Batched tensor core: generalised linear models for many segments at once.

Rows are grouped into fixed-size blocks that never straddle a cell (a cell is a segment,
or a segment x fold x arm), so every segment's weighted Gram matrix is a sum of small
``bmm`` products over its blocks: no per-row outer products, no Python loop over segments.
Padding costs at most one partial block per cell. Work is chunked over blocks, which bounds
memory independently of the number of rows.

Two model structures share one Newton solver:

* ``pooled=False`` (per segment): segment k has its own coefficients theta_k, with an L2
  penalty on the slopes (scikit-learn's ``C`` is ``1 / penalty``).
* ``pooled=True``: coefficients are gamma + theta_k, a shared part plus a segment deviation
  shrunk toward zero, so small segments borrow strength from the rest. The exact Newton step
  is solved through the Schur complement of the block-diagonal segment part.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Layout", "make_layout", "read_only_tensor", "pad", "pad_design", "unpad", "GLMFit", "fit_glm", "predict_glm",
           "segment_sum", "chunk_bytes", "empty", "fit_segment_glm", "spd_inverse", "segment_inverses", "shared_hessian"]

# Gram passes, padding and the per-segment p x p algebra work in chunks of about this size on
# CPU: small enough that the temporaries are recycled by the allocator and stay in cache
# (fresh multi-hundred-MB buffers page-fault on every pass, which cost as much as the
# arithmetic on a 2-core VM). On a GPU chunks only amortise kernel launches.
CHUNK_BYTES = 16 * 2**20
GPU_CHUNK_BYTES = 512 * 2**20


def chunk_bytes(device) -> int:
    return CHUNK_BYTES if torch.device(device).type == "cpu" else GPU_CHUNK_BYTES


def empty(shape, dtype, device) -> torch.Tensor:
    """``torch.empty``, except that CPU buffers come from numpy, which asks the kernel for huge
    pages: the first touch of a fresh multi-hundred-MB buffer then page-faults 3-4x faster."""
    if torch.device(device).type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.empty(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))


# Newton steps with a fresh Hessian before chord steps (the last Hessian's factors reused: a
# gradient pass per step, no Gram matrices, no inverses); a chord step that shrinks the Newton
# decrement by less than REFRESH_RATIO orders a fresh Hessian.
HESSIAN_STEPS = 2
REFRESH_RATIO = 0.15
CHORD_TOL = 1e-3


@dataclass
class Layout:
    """Padded block layout: ``rows[b, j]`` is the row in slot j of block b (-1 = padding)."""

    rows: torch.Tensor        # (n_blocks, block_size) long
    block_cell: torch.Tensor  # (n_blocks,) long
    n_rows: int

    @property
    def block_size(self) -> int:
        return self.rows.shape[1]

    @property
    def valid(self) -> torch.Tensor:
        return self.rows >= 0


def make_layout(cells: np.ndarray, n_cells: int, block_size: int | None = None,
                order: np.ndarray | None = None, device="cpu") -> Layout:
    """Group rows by cell into blocks of ``block_size`` (chosen from the data when None).

    ``order`` gives the row order within cells (default: stable by row index).
    """
    cells = np.asarray(cells, dtype=np.int64)
    n = len(cells)
    if order is None:  # torch's stable sort: several times faster than numpy's on int64
        order = torch.sort(read_only_tensor(cells), stable=True).indices.numpy()
    counts = np.bincount(cells, minlength=n_cells)
    if block_size is None:
        mean_cell = n / max(1, int((counts > 0).sum()))
        block_size = int(2 ** np.clip(np.round(np.log2(max(mean_cell / 4, 1))), 3, 7))
    blocks_per_cell = -(-counts // block_size)
    n_blocks = int(blocks_per_cell.sum())
    first_block = np.concatenate([[0], np.cumsum(blocks_per_cell)[:-1]])
    first_row = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_cells = np.repeat(np.arange(n_cells), counts)  # = cells[order], without a gather
    slot = np.arange(n) + (first_block * block_size - first_row)[sorted_cells]
    rows = np.full(n_blocks * block_size, -1, dtype=np.int64)
    rows[slot] = order
    block_cell = np.repeat(np.arange(n_cells), blocks_per_cell)
    return Layout(torch.as_tensor(rows.reshape(n_blocks, block_size), device=device),
                  torch.as_tensor(block_cell, device=device), n)


def read_only_tensor(values: np.ndarray, dtype=None, device=None) -> torch.Tensor:
    """``torch.as_tensor`` for arrays that may be read-only views of a frame, for callers
    that never write to the result (torch warns about every such array otherwise)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(values, dtype=dtype, device=device)


def pad(layout: Layout, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Row-indexed values (n, ...) -> blocked (n_blocks, block_size, ...)."""
    idx = layout.rows.clamp(min=0)
    out = values[idx]
    mask = layout.valid.reshape(layout.valid.shape + (1,) * (values.dim() - 1))
    return torch.where(mask, out, torch.as_tensor(fill, dtype=values.dtype, device=values.device))


def pad_design(layout: Layout, X: torch.Tensor, center=None, scale=None,
               index: torch.Tensor | None = None) -> torch.Tensor:
    """Blocked design with an intercept column first (zeros on padding), gathered a chunk of
    blocks at a time into one reused buffer (``index_select`` into a buffer is ~3x faster than
    advanced indexing, which allocates a fresh tensor per chunk). With ``center`` / ``scale``
    the columns are standardised on the way, as ``(x - center) * scale``. ``index`` maps the
    layout's rows to rows of X (a subset of X's rows, without copying X)."""
    n_blocks, B = layout.rows.shape
    Xb = empty((n_blocks, B, X.shape[1] + 1), X.dtype, X.device)
    step = max(1, chunk_bytes(X.device) // (Xb[0].numel() * Xb.element_size()))
    buf = X.new_empty((min(step, n_blocks) * B, X.shape[1]))
    if center is not None:
        center, scale = (torch.as_tensor(v, dtype=X.dtype, device=X.device) for v in (center, scale))
    for a in range(0, n_blocks, step):
        rows = layout.rows[a:a + step]
        padding = (rows < 0).unsqueeze(-1)
        source = rows.clamp(min=0).reshape(-1)
        if index is not None:
            source = index[source]
        gathered = torch.index_select(X, 0, source, out=buf[:rows.numel()])
        if center is not None:
            gathered.sub_(center).mul_(scale)
        chunk = Xb[a:a + step]
        chunk[..., 1:] = gathered.view(rows.shape + (X.shape[1],))
        chunk[..., 0] = 1.0
        chunk.masked_fill_(padding, 0.0)
    return Xb


def unpad(layout: Layout, blocked: torch.Tensor, blocks: torch.Tensor | None = None,
          out: torch.Tensor | None = None) -> torch.Tensor:
    """Blocked values for ``blocks`` (all when None) -> row-indexed tensor ``out``."""
    rows = layout.rows if blocks is None else layout.rows[blocks]
    if out is None:
        out = torch.full((layout.n_rows,), float("nan"), dtype=blocked.dtype,
                         device=blocked.device)
    valid = rows >= 0
    out[rows[valid]] = blocked[valid]
    return out


def segment_sum(values: torch.Tensor, segment: torch.Tensor, n_segments: int) -> torch.Tensor:
    out = torch.zeros((n_segments,) + values.shape[1:], dtype=values.dtype, device=values.device)
    return out.index_add_(0, segment, values)


@dataclass
class GLMFit:
    """Coefficients of segment k are ``shared + local[k]`` (intercept first)."""

    shared: torch.Tensor  # (p,)
    local: torch.Tensor   # (n_segments, p)
    family: str
    n_iter: int
    converged: bool

    @property
    def coef(self) -> torch.Tensor:
        return self.local + self.shared


def _mean_var_loss(eta, y, family):
    if family == "logistic":
        mu = torch.sigmoid(eta)
        return mu, mu * (1 - mu), torch.nn.functional.softplus(eta) - y * eta
    return eta, torch.ones_like(eta), 0.5 * (y - eta) ** 2


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


def _linear_predictor(X, coef):
    """X (n, B, p) times each block's coefficients (n, p) -> (n, B). Written as row-vector
    products: the matrix-vector form ``bmm(X, coef[..., None])`` runs at half the speed."""
    return torch.bmm(coef.unsqueeze(1), X.mT).squeeze(1)


def _pass(Xb, yb, wb, blocks, block_seg, coef, n_seg, family, need_hessian, out=None):
    """One pass over the blocks: per-segment loss, gradient and (optionally) Gram matrix.

    The gradient and Gram matrix are views into one (n_seg, p, p + 1) accumulator; ``out``
    lends one that earlier passes used (their results are then overwritten).
    """
    p = Xb.shape[-1]
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
        X, y, w = Xb[chunk], yb[chunk], wb[chunk]
        seg = block_seg[chunk]
        eta = _linear_predictor(X, coef[seg])
        mu, var, row_loss = _mean_var_loss(eta, y, family)
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


def _robust_spd_inverse(A: torch.Tensor) -> torch.Tensor:
    """Batched SPD inverse by Cholesky; near-singular matrices get a growing diagonal jitter."""
    L, info = torch.linalg.cholesky_ex(A)
    if bool((info > 0).any()):
        scale = A.diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp(min=1.0)[..., None, None]
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        for jitter in (1e-7, 1e-5, 1e-3):
            L, info = torch.linalg.cholesky_ex(A + jitter * scale * eye)
            if not bool((info > 0).any()):
                break
        else:
            return torch.linalg.pinv(A, hermitian=True)
    return torch.cholesky_inverse(L)


def _block_inverse(A: torch.Tensor, base: int = 16) -> torch.Tensor:
    """Batched SPD inverse by recursive 2 x 2 blocking: nearly all work is ``bmm``, which on
    CPU runs several times faster than per-matrix LAPACK factorisations of small matrices."""
    n = A.shape[-1]
    if n <= base:
        return torch.linalg.inv_ex(A)[0]
    h = n // 2
    A11, A12, A22 = A[:, :h, :h].contiguous(), A[:, :h, h:].contiguous(), A[:, h:, h:]
    B = _block_inverse(A11, base)
    C = torch.bmm(A12.mT, B)                               # A21 A11^-1
    Si = _block_inverse(torch.baddbmm(A22, C, A12, alpha=-1), base)  # Schur complement
    SiC = torch.bmm(Si, C)
    out = torch.empty_like(A)
    torch.baddbmm(B, C.mT, SiC, out=out[:, :h, :h])
    out[:, h:, :h] = SiC.neg_()
    out[:, :h, h:] = SiC.mT
    out[:, h:, h:] = Si
    return out


def spd_inverse(A: torch.Tensor) -> torch.Tensor:
    """Inverses of a batch (K, p, p) of symmetric positive definite matrices."""
    inv = _block_inverse(A)
    # an SPD inverse has a positive diagonal, and a failed elimination spreads NaN / inf onto it
    diag = inv.diagonal(dim1=-2, dim2=-1)
    bad = ~((diag > 0) & torch.isfinite(diag)).all(-1)
    if bool(bad.any()):  # no pivoting in the blocking: redo failures the careful way
        inv[bad] = _robust_spd_inverse(A[bad])
    return inv


def segment_inverses(gram, local_pen, out=None):
    """(G_k + diag(local_pen))^-1 for every segment and their sum (float64), computed a
    bounded slab at a time (into ``out`` when given)."""
    K, p = gram.shape[:2]
    out = empty((K, p, p), gram.dtype, gram.device) if out is None else out
    total = torch.zeros(p, p, dtype=torch.float64, device=gram.device)
    step = max(1, chunk_bytes(gram.device) // (4 * p * p * gram.element_size()))
    for a in range(0, K, step):
        A = gram[a:a + step].clone(memory_format=torch.contiguous_format)
        A.diagonal(dim1=-2, dim2=-1).add_(local_pen)
        out[a:a + step] = spd_inverse(A)
        total += out[a:a + step].sum(0)
    return out, total


def shared_hessian(inv_sum, n_seg, local_pen, shared_pen):
    """Schur complement of the pooled penalised Hessian after eliminating the segment
    deviations: S = diag(shared_pen) + K L - L (sum_k A_k^-1) L with L = diag(local_pen).

    Follows from G_k A_k^-1 = I - L A_k^-1 (A_k = G_k + L): only the sum of the inverses is
    needed, not the K products G_k A_k^-1 G_k.
    """
    lam = local_pen.to(torch.float64)
    return torch.diag(shared_pen.to(torch.float64) + n_seg * lam) - lam[:, None] * inv_sum * lam


def _factorise(gram, local_pen, shared_pen, pooled, out=None):
    """Everything a Newton direction needs from the Hessian: the segment blocks' inverses and,
    for pooled models, the inverse of the shared part's Schur complement."""
    inv, inv_sum = segment_inverses(gram, local_pen, out)
    if not pooled:
        return inv, None
    S = shared_hessian(inv_sum, len(inv), local_pen, shared_pen)
    return inv, _robust_spd_inverse(S.unsqueeze(0))[0]


def _symmetric_solve(inv, b):
    """inv_k @ b_k for symmetric inv_k, as the row-vector product b_k' inv_k (the
    matrix-vector form of ``bmm`` runs at a fraction of the speed)."""
    return torch.bmm(b.unsqueeze(1), inv).squeeze(1)


def _newton_direction(grad, local, shared, inv, S_inv, local_pen, shared_pen):
    g_local = grad + local_pen * local
    u = _symmetric_solve(inv, g_local)  # A_k^-1 g_k
    if S_inv is None:
        return torch.zeros_like(shared), u
    # Eliminate the segment deviations (d_k = A_k^-1 (g_k - G_k d_shared)) and solve for the
    # shared part; with G_k = A_k - L the right-hand side needs only sums over segments.
    r = (shared_pen * shared).to(torch.float64) + (local_pen * (u - local)).sum(0, dtype=torch.float64)
    d_shared = (S_inv @ r).to(grad.dtype)
    d_local = u + _symmetric_solve(inv, (local_pen * d_shared).expand_as(u)) - d_shared
    return d_shared, d_local


def fit_glm(Xb, yb, wb, blocks, block_seg, n_seg, *, family="logistic", pooled=True,
            local_penalty, shared_penalty=None, max_iter=50, tol=1e-6,
            init: GLMFit | None = None) -> GLMFit:
    """Penalised GLM for all segments at once by Newton's method with step halving; after
    HESSIAN_STEPS fresh Hessians, chord steps reuse the last one's factors.

    Xb (n_blocks, B, p) holds an intercept column first; wb is a row weight (0 on padding);
    only ``blocks`` enter the fit; ``block_seg`` maps every block to its segment.
    ``local_penalty`` / ``shared_penalty`` are (p,) ridge penalties on theta_k / gamma.
    ``init`` starts Newton from an earlier fit of the same model (e.g. on another fold).
    """
    p = Xb.shape[-1]
    opts = dict(dtype=Xb.dtype, device=Xb.device)
    # float32 steps and sums never get below their rounding noise: compare within it
    tol = max(tol, 100 * torch.finfo(Xb.dtype).eps)
    rel_slack = 100 * torch.finfo(Xb.dtype).eps
    decrement_tol = 3 * float(torch.finfo(Xb.dtype).eps) ** 0.5  # 1e-3 nats in float32
    chord_tol = CHORD_TOL * decrement_tol ** 2
    local_pen = torch.as_tensor(local_penalty, **opts).expand(p)
    shared_pen = torch.as_tensor(0.0 if shared_penalty is None else shared_penalty, **opts).expand(p)
    local, shared = torch.zeros(n_seg, p, **opts), torch.zeros(p, **opts)
    offset = 0.0

    def penalised(loss, local):  # per segment
        return loss + 0.5 * (local_pen * local ** 2).sum(1)

    def total(obj, shared):
        return obj.sum() + 0.5 * (shared_pen * shared ** 2).sum()

    if family == "gaussian":  # centre y: penalties then shrink toward the overall mean
        offset = float((wb[blocks] * yb[blocks]).sum() / wb[blocks].sum().clamp(min=1e-12))
        yb = yb - offset
    else:
        # start at the overall rate and each segment at its own (smoothed) rate: saves the
        # Newton steps that would only find the intercepts, and more on rare events
        w_seg = segment_sum(wb[blocks].sum(1), block_seg[blocks], n_seg)
        wy_seg = segment_sum((wb[blocks] * yb[blocks]).sum(1), block_seg[blocks], n_seg)
        rate = (wy_seg.sum() / w_seg.sum().clamp(min=1e-12)).clamp(1e-6, 1 - 1e-6)
        shared[0] = torch.logit(rate)
        start_logit = torch.logit((wy_seg + rate) / (w_seg + 1))
        if init is not None:  # (a Gaussian fit is one exact step from anywhere)
            shared = init.shared.to(**opts).clone()
        local[:, 0] = start_logit - shared[0]
        if init is not None:
            # per segment, keep the earlier fit where it beats the cold start: an intercept
            # that ran off toward -inf on data without events is a bad start on data with
            # some. The cold linear predictor is constant per segment: its loss needs no pass.
            warm = init.local.to(**opts)
            cold_loss = w_seg * torch.nn.functional.softplus(start_logit) - wy_seg * start_logit
            warm_loss = _pass(Xb, yb, wb, blocks, block_seg, warm + shared, n_seg, family, False)[0]
            better = penalised(warm_loss, warm) < penalised(cold_loss, local)
            local = torch.where(better.unsqueeze(1), warm, local)

    acc = empty((n_seg, p, p + 1), **opts)  # one Gram accumulator for every pass
    inv_buf = empty((n_seg, p, p), **opts)  # and one buffer for the segment inverses
    loss, grad, gram = _pass(Xb, yb, wb, blocks, block_seg, local + shared, n_seg, family, True, acc)
    obj = penalised(loss, local)
    # Joint phase: the shared part and every segment move together (pooled models). Once the
    # shared part has converged, only segments that have not are iterated, with the shared
    # part fixed, and passes read only their blocks: the last Newton steps typically concern
    # a handful of segments (e.g. an intercept drifting toward -inf in an arm without events).
    joint = pooled
    active = torch.ones(n_seg, dtype=torch.bool, device=Xb.device)
    run = blocks
    converged, it = False, 0
    # After HESSIAN_STEPS Newton steps, chord steps: the error then contracts linearly, not
    # quadratically, but a step costs a gradient pass instead of Gram matrices and inverses.
    n_hessians, refresh, chord_before = 0, False, False
    prev_decrement = torch.full((n_seg,), float("inf"), **opts)
    prev_shared = prev_worst = float("inf")
    for it in range(1, max_iter + 1):
        idx = torch.nonzero(active).squeeze(1)
        fresh = gram is not None
        if fresh:
            inv, S_inv = _factorise(gram if len(idx) == n_seg else gram[idx], local_pen,
                                    shared_pen, joint, out=inv_buf[:len(idx)])
            where = torch.full((n_seg,), -1, dtype=torch.long, device=Xb.device)
            where[idx] = torch.arange(len(idx), device=Xb.device)
            n_hessians += 1
        seg_inv = inv if len(idx) == len(inv) else inv[where[idx]]
        d_shared, d_local = _newton_direction(grad[idx], local[idx], shared, seg_inv,
                                              S_inv if joint else None, local_pen, shared_pen)
        # Newton decrement (predicted loss decrease) per segment and of the shared part
        decrement = ((grad[idx] + local_pen * local[idx]) * d_local).sum(1).abs()
        shared_decrement = float(((grad.sum(0) + shared_pen * shared) * d_shared).sum().abs())
        worst = max(float(decrement.max()) if len(idx) else 0.0, shared_decrement)
        # The decrement test ends the slow drift of an intercept toward -inf in an arm that
        # never clicks (steps of ~1 that no longer change the loss or any prediction).
        # A Newton step leaves about decrement^2 behind, a chord step about rate x decrement:
        # chord steps stop once that is as small as what a Newton step below the tolerance leaves.
        if fresh:
            done, shared_done = decrement < decrement_tol, shared_decrement < decrement_tol
            refresh = False
        else:
            seg_rate = (decrement / prev_decrement[idx]).clamp(max=1.0) if chord_before else 1.0
            rate = min(shared_decrement / prev_shared, 1.0) if chord_before and prev_shared else 1.0
            done = decrement * seg_rate < chord_tol
            shared_done = shared_decrement * rate < chord_tol
            refresh = worst > REFRESH_RATIO * prev_worst
        prev_decrement[idx], prev_shared, chord_before = decrement, shared_decrement, not fresh
        prev_worst = worst
        full_size = max(float(d_local.abs().max()) if len(idx) else 0.0, float(d_shared.abs().max()))
        # Known before the step is taken: a last step needs losses, not another Gram pass.
        small = fresh and full_size < tol  # what a chord step leaves is not that small
        last = family == "gaussian" or small or (bool(done.all()) and shared_done)
        step = torch.ones(1 if joint else len(idx), **opts)
        for _ in range(30):  # halve the step where the penalised loss went up
            new_local = local.clone()
            new_local[idx] -= step.view(-1, 1) * d_local
            new_shared = shared - step[0] * d_shared if joint else shared
            if family == "gaussian":  # quadratic loss: the Newton step is exact
                break
            want_hessian = not last and (n_hessians < HESSIAN_STEPS or refresh)
            loss, grad, gram = _pass(Xb, yb, wb, run, block_seg, new_local + new_shared,
                                     n_seg, family, want_hessian, acc)
            new_obj = penalised(loss, new_local)
            if joint:
                before, after = total(obj, shared), total(new_obj, new_shared)
            else:
                before, after = obj[idx], new_obj[idx]
            worse = after > before + rel_slack * before.abs().clamp(min=1.0)
            if not bool(worse.any()):
                break
            step = torch.where(worse, step / 2, step)
            refresh = True  # a step that went uphill: the Hessian no longer fits
        size = max(float((step.view(-1, 1) * d_local).abs().max()) if len(idx) else 0.0,
                   float((step[0] * d_shared).abs().max()))
        local, shared = new_local, new_shared
        if last or (fresh and size < tol):
            converged = True
            break
        obj[idx] = new_obj[idx]
        if joint and shared_done:
            joint = False
        if not joint:
            active[idx] = ~done
            run = blocks[active[block_seg[blocks]]]
    shared = shared.clone()
    shared[0] += offset
    return GLMFit(shared, local, family, it, converged)


def predict_glm(fit: GLMFit, Xb, blocks, block_seg) -> torch.Tensor:
    """Mean predictions (probabilities for logistic) on ``blocks``: (len(blocks), B)."""
    coef = fit.coef
    out = []
    for chunk in _chunks(blocks, Xb.shape[1], Xb.shape[-1]):
        eta = _linear_predictor(Xb[chunk], coef[block_seg[chunk]])
        out.append(torch.sigmoid(eta) if fit.family == "logistic" else eta)
    return torch.cat(out) if out else Xb.new_zeros((0, Xb.shape[1]))


def fit_segment_glm(X, y, segment, n_segments, *, weight=None, family="logistic",
                    pooled=True, penalty=1.0, shrinkage=10.0, intercept_penalty=1e-3,
                    max_iter=50, tol=1e-7) -> GLMFit:
    """Convenience wrapper: fit from row-indexed tensors (X without intercept column).

    Per segment (``pooled=False``): slopes get ridge ``penalty`` (scikit-learn ``C=1/penalty``).
    Pooled: shared slopes get ``penalty``-free fitting (tiny ridge for stability) and segment
    deviations get ridge ``shrinkage``.
    """
    X = torch.as_tensor(X)
    dtype, device = X.dtype, X.device
    y = torch.as_tensor(y, dtype=dtype, device=device)
    w = torch.ones(len(X), dtype=dtype, device=device) if weight is None else \
        torch.as_tensor(weight, dtype=dtype, device=device)
    layout = make_layout(np.asarray(torch.as_tensor(segment).cpu()), n_segments, device=device)
    Xb, yb, wb = pad_design(layout, X), pad(layout, y), pad(layout, w)
    blocks = torch.arange(layout.rows.shape[0], device=device)
    local_pen, shared_pen = penalties(X.shape[1] + 1, pooled, penalty, shrinkage,
                                      intercept_penalty, dtype, device)
    return fit_glm(Xb, yb, wb, blocks, layout.block_cell, n_segments, family=family,
                   pooled=pooled, local_penalty=local_pen, shared_penalty=shared_pen,
                   max_iter=max_iter, tol=tol)


def penalties(p, pooled, penalty, shrinkage, intercept_penalty, dtype, device,
              shared_intercept_penalty=1.0):
    """(local, shared) ridge penalty vectors, intercept first."""
    local = torch.full((p,), float(shrinkage if pooled else penalty), dtype=dtype, device=device)
    local[0] = intercept_penalty
    # The shared intercept is nearly unidentified next to almost-free item intercepts: a weak
    # N(0, 1) prior keeps the Schur complement well conditioned without biasing anything.
    shared = torch.full((p,), 1e-4, dtype=dtype, device=device)
    shared[0] = shared_intercept_penalty
    return local, shared
