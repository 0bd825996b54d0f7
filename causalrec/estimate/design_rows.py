"""Design rows read from a frame's columns on demand (``DesignSpec.rows``), or formed once
as a matrix when that is small enough: the GLM's padded design is gathered from either."""
from __future__ import annotations

import threading

import numpy as np
import torch

from ..glm.layout import read_only_tensor

__all__ = ["DesignRows", "MATERIALISE_BYTES"]

_ROWS = 16384  # rows per chunk while filling X: a few MB of float64, cache-sized
# design rows kept as one matrix up to this size (``DesignRows.matrix``): 1M rows x 64
# float32 columns take 0.26 GB; a 10M-row log stays on the frame's columns (memory, issue 15)
MATERIALISE_BYTES = 2**30


class DesignRows:
    """Design rows read from a frame's columns on demand: ``gather_into(rows, out)`` writes
    the rows ``rows`` (positions or a slice) standardised, ``(x 2^exponent - center) * scale``
    computed in float64 before the cast to ``dtype`` (1e12 + x keeps its x), into ``out`` (m, d).
    Columns are gathered one at a time into a (d, m) block (torch's ``index_select`` into
    reused buffers: ~1.5x numpy's take here), written to ``out`` in one transposing copy."""

    def __init__(self, sources, center, scale, n_rows, dtype, standardise=True, exponent=None):
        as_tensor = lambda v: read_only_tensor(v if v.dtype.kind == "f" else np.asarray(v, dtype=np.int64))
        self.sources = [(as_tensor(v[0]), int(v[1])) if isinstance(v, tuple) else as_tensor(v)
                        for v in sources]
        self.center = torch.as_tensor(center, dtype=torch.float64)[:, None]
        self.scale = torch.as_tensor(scale, dtype=torch.float64)[:, None]
        self.shape, self.dtype, self.standardise = (n_rows, len(sources)), dtype, standardise
        # columns rescaled by a power of two, as two exact float64 factors (2^1074 overflows)
        self.rescale = [(j, 2.0 ** (int(k) // 2), 2.0 ** (int(k) - int(k) // 2))
                        for j, k in enumerate(np.zeros(0) if exponent is None else exponent) if k]
        self._local = threading.local()  # reused buffers per thread (shards gather at once)
        self._matrix, self._lock = None, threading.Lock()

    def fill(self, out: np.ndarray | None = None) -> np.ndarray:
        """Every row, written a chunk of rows at a time into ``out`` (n, d) (a new C-order
        array when None)."""
        out = np.empty(self.shape, dtype=self.dtype) if out is None else out
        for a in range(0, len(out), _ROWS):
            self.gather_into(slice(a, a + _ROWS), out[a:a + _ROWS])
        return out

    def matrix(self) -> torch.Tensor | None:
        """Every row as one C-order (n + 1, 1 + d) tensor, the intercept column (ones) first
        as in the GLM's padded design, and a last row of zeros (row n) that a padding slot
        gathers (so the padded design needs no masking pass); formed at the first call and
        kept, when it takes at most ``MATERIALISE_BYTES``; else None. A padding gathers rows
        in cell order, i.e. at random: from the matrix a row is one contiguous run copied
        straight into its block, from the frame one value of each of d columns (~5x slower),
        and every padding (3 per cross-fitting split) would standardise the same rows again."""
        with self._lock:  # shards pad at once, from threads
            n, d = self.shape
            if self._matrix is None and n * (d + 1) * self.dtype.itemsize <= MATERIALISE_BYTES:
                matrix = np.empty((n + 1, d + 1), dtype=self.dtype)
                matrix[:n, 0] = 1.0
                matrix[n] = 0.0
                self.fill(matrix[:n, 1:])
                self.release()
                self._matrix = torch.from_numpy(matrix)
            return self._matrix

    def _buffers(self, m: int):
        buffers = getattr(self._local, "buffers", None)
        if buffers is None or buffers[0].shape[1] < m:
            buffers = self._local.buffers = (
                torch.empty((len(self.sources), m), dtype=torch.float64),
                torch.empty(m, dtype=torch.float32), torch.empty(m, dtype=torch.int64))
        return [b[..., :m] for b in buffers]

    def release(self) -> None:
        """Free this thread's gather buffers (a padding is done; the next gather makes new
        ones): ~33 MB of float64 at d=64 that would otherwise stay beside the fits."""
        self._local.__dict__.pop("buffers", None)

    def gather_into(self, rows, out: np.ndarray) -> None:
        m = len(out)
        block, f32, codes = self._buffers(m)
        if isinstance(rows, slice):
            take = lambda v, buf: buf.copy_(v[rows])
        else:
            index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
            take = lambda v, buf: torch.index_select(v, 0, index, out=buf)
        for j, values in enumerate(self.sources):
            if isinstance(values, tuple):  # a level of a categorical: its codes and the level
                block[j] = take(values[0], codes) == values[1]
            elif values.dtype == torch.float64:
                take(values, block[j])
            else:
                block[j] = take(values, f32)
        for j, half, rest in self.rescale:
            block[j].mul_(half).mul_(rest)
        if self.standardise:
            block.sub_(self.center).mul_(self.scale)
        torch.from_numpy(out).copy_(block.T)
