"""Batched linear algebra of the segment GLM: SPD inverses of many small matrices and the
Schur complement that couples a pooled model's segments."""
from __future__ import annotations

import torch

from .layout import chunk_bytes, empty

__all__ = ["spd_inverse", "robust_spd_inverse", "segment_inverses", "shared_hessian",
           "symmetric_solve"]


def robust_spd_inverse(A: torch.Tensor) -> torch.Tensor:
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
        inv[bad] = robust_spd_inverse(A[bad])
    return inv


def segment_inverses(gram, local_pen, out=None, index=None):
    """(G_k + diag(local_pen))^-1 for every segment and their sum (float64), computed a
    bounded slab at a time (into ``out`` when given). With ``index``, only those segments'
    inverses are formed, into their rows of ``out`` (no gathered copy of their Gram matrices
    or inverses); the sum is then over them."""
    K, p = gram.shape[:2]
    out = empty((K, p, p), gram.dtype, gram.device) if out is None else out
    total = torch.zeros(p, p, dtype=torch.float64, device=gram.device)
    step = max(1, chunk_bytes(gram.device) // (4 * p * p * gram.element_size()))
    for a in range(0, K if index is None else len(index), step):
        rows = slice(a, a + step) if index is None else index[a:a + step]
        A = gram[rows].clone(memory_format=torch.contiguous_format)
        A.diagonal(dim1=-2, dim2=-1).add_(local_pen)
        out[rows] = spd_inverse(A)
        total += out[rows].sum(0)
    return out, total


def shared_hessian(inv_sum, n_seg, local_pen, shared_pen):
    """Schur complement of the pooled penalised Hessian after eliminating the segment
    deviations: S = diag(shared_pen) + K L - L (sum_k A_k^-1) L with L = diag(local_pen).

    Follows from G_k A_k^-1 = I - L A_k^-1 (A_k = G_k + L): only the sum of the inverses is
    needed, not the K products G_k A_k^-1 G_k.
    """
    lam = local_pen.to(torch.float64)
    return torch.diag(shared_pen.to(torch.float64) + n_seg * lam) - lam[:, None] * inv_sum * lam


def symmetric_solve(inv, b, index=None):
    """inv_k @ b_k for symmetric inv_k, as the row-vector product b_k' inv_k (the
    matrix-vector form of ``bmm`` runs at a fraction of the speed). With ``index``, b_k is
    paired with inv[index[k]], the inverses gathered a bounded slab at a time (slabs start at
    multiples of 64 rows: each product then reads its operands at the same alignment as one
    gathered batch would, and CPU ``bmm`` results depend on it)."""
    if index is None:
        return torch.bmm(b.unsqueeze(1), inv).squeeze(1)
    out = torch.empty_like(b)
    step = max(64, chunk_bytes(b.device) // (inv[0].numel() * inv.element_size()) // 64 * 64)
    for a in range(0, len(index), step):
        out[a:a + step] = torch.bmm(b[a:a + step].unsqueeze(1), inv[index[a:a + step]]).squeeze(1)
    return out
