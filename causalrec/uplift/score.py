"""Scoring users x items in bounded memory: chunked matrix products with a running top-k."""
from __future__ import annotations

import torch

from ..glm.layout import chunk_bytes

__all__ = ["chunked_top_k", "quadratic_forms"]


def chunked_top_k(X: torch.Tensor, W: torch.Tensor, k: int, budget: int | None = None):
    """Top-k columns of ``X @ W.T`` per row, (values, column indices), each (n, k).

    Rows and columns are taken in chunks whose score block fits ``budget`` bytes (the
    engine's chunk budget by device), and each column chunk's top-k is merged into the
    running one, so a 100k x 10k score matrix never exists at once. NaN scores never win.
    """
    n, K = len(X), len(W)
    budget = chunk_bytes(X.device) if budget is None else budget
    item_step = max(k, min(K, budget // (X.element_size() * 256)))
    user_step = max(1, budget // (X.element_size() * (item_step + k)))
    values = X.new_empty((n, k))
    index = torch.empty((n, k), dtype=torch.long, device=X.device)
    for a in range(0, n, user_step):
        Xa = X[a:a + user_step]
        best_v, best_i = None, None
        for b in range(0, K, item_step):
            scores = Xa @ W[b:b + item_step].T
            scores = torch.nan_to_num(scores, nan=float("-inf"))
            v, i = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            i += b
            if best_v is not None:  # merge with the running top-k
                v, j = torch.topk(torch.cat([best_v, v], 1), k, dim=1)
                i = torch.gather(torch.cat([best_i, i], 1), 1, j)
            best_v, best_i = v, i
        values[a:a + user_step], index[a:a + user_step] = best_v, best_i
    return values, index


def quadratic_forms(X: torch.Tensor, cov: torch.Tensor, codes: torch.Tensor,
                    budget: int | None = None) -> torch.Tensor:
    """x_i' cov[codes_i] x_i for every row, gathering the covariances a chunk at a time."""
    p = X.shape[1]
    budget = chunk_bytes(X.device) if budget is None else budget
    step = max(1, budget // (X.element_size() * p * p))
    out = X.new_empty(len(X))
    for a in range(0, len(X), step):
        x = X[a:a + step]
        out[a:a + step] = torch.einsum("np,npq,nq->n", x, cov[codes[a:a + step]], x)
    return out.clamp(min=0)
