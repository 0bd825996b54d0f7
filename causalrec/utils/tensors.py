"""Small torch helpers shared below the engine."""
from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["read_only_tensor"]


def read_only_tensor(values: np.ndarray, dtype=None, device=None) -> torch.Tensor:
    """``torch.as_tensor`` for arrays that may be read-only views of a frame, for callers
    that never write to the result (torch warns about every such array otherwise)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(values, dtype=dtype, device=device)
