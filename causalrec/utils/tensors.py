"""Small torch helpers shared below the engine."""
from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["read_only_tensor", "at_rows"]


def read_only_tensor(values: np.ndarray, dtype=None, device=None) -> torch.Tensor:
    """``torch.as_tensor`` for arrays that may be read-only views of a frame, for callers
    that never write to the result (torch warns about every such array otherwise). A view
    with a negative stride (a frame's rows reversed, ``df.iloc[::-1]``) is copied: torch
    refuses those."""
    if isinstance(values, np.ndarray) and any(s < 0 for s in values.strides):
        values = np.ascontiguousarray(values)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(values, dtype=dtype, device=device)


def at_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for a 1-D integer ``index`` (per-item numbers at each row): the same
    values through ``index_select``, which on CPU runs ~5x faster than advanced indexing."""
    return torch.index_select(values, 0, index)
