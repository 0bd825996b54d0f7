"""Padded block layout: rows grouped into fixed-size blocks that never straddle a cell.

A cell is a segment, or a segment x fold x arm. Every segment's weighted Gram matrix is then a
sum of small ``bmm`` products over its blocks: no per-row outer products, no Python loop over
segments. Padding costs at most one partial block per cell; work is chunked over blocks, which
bounds memory independently of the number of rows.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import torch

from ..utils.tensors import at_rows, read_only_tensor  # re-exported: the engine's callers import it here

__all__ = ["Layout", "make_layout", "read_only_tensor", "pad", "pad_design", "unpad",
           "segment_sum", "block_size_for", "resolve_device", "resolve_dtype", "chunk_bytes", "empty", "release_free_heap", "CHUNK_BYTES", "GPU_CHUNK_BYTES"]

# Gram passes, padding and the per-segment p x p algebra work in chunks of about this size on
# CPU: small enough that the temporaries are recycled by the allocator and stay in cache
# (fresh multi-hundred-MB buffers page-fault on every pass, which cost as much as the
# arithmetic on a 2-core VM). On a GPU chunks only amortise kernel launches.
CHUNK_BYTES = 16 * 2**20
GPU_CHUNK_BYTES = 512 * 2**20


def resolve_device(device="auto") -> torch.device:
    """"auto" is CUDA when present; a CUDA device without CUDA is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or a torch device, got {device!r}") from error
    if device.type not in ("cpu", "cuda"):  # torch parses "mps", "meta", ...: fits need these
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {str(device)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but torch sees no CUDA device "
                         "(use device='auto' or 'cpu')")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} was asked for, but torch sees "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "float64": torch.float64}
    if dtype not in table:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return table[dtype]


def chunk_bytes(device) -> int:
    return CHUNK_BYTES if torch.device(device).type == "cpu" else GPU_CHUNK_BYTES


def empty(shape, dtype, device) -> torch.Tensor:
    """``torch.empty``, except that CPU buffers come from numpy, which asks the kernel for huge
    pages: the first touch of a fresh multi-hundred-MB buffer then page-faults 3-4x faster."""
    if torch.device(device).type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.empty(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))


def _find_malloc_trim():
    try:  # glibc only (Linux); elsewhere there is nothing to call
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


_MALLOC_TRIM = _find_malloc_trim()


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc ``malloc_trim``; a no-op
    elsewhere). Arrays under glibc's mmap threshold (which grows to 32 MB once larger blocks
    were freed) live on the heap, and once freed their pages stay resident: after a padding
    or a fold's fits, ~0.1 GB at 10M rows beside the next large buffers."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@dataclass
class Layout:
    """Padded block layout: ``rows[b, j]`` is the row in slot j of block b (-1 = padding)."""

    rows: torch.Tensor        # (n_blocks, block_size) int32 (int64 from 2**31 rows on)
    block_cell: torch.Tensor  # (n_blocks,) long
    n_rows: int

    @property
    def block_size(self) -> int:
        return self.rows.shape[1]

    @property
    def valid(self) -> torch.Tensor:
        return self.rows >= 0


def block_size_for(counts: np.ndarray) -> int:
    """Block size for cells of these row counts: about a quarter of the mean non-empty cell,
    a power of two in [8, 128]. A sharded fit passes the whole log's choice to every shard."""
    mean_cell = int(np.sum(counts)) / max(1, int((np.asarray(counts) > 0).sum()))
    return int(2 ** np.clip(np.round(np.log2(max(mean_cell / 4, 1))), 3, 7))


def make_layout(cells: np.ndarray, n_cells: int, block_size: int | None = None,
                order: np.ndarray | None = None, device="cpu") -> Layout:
    """Group rows by cell into blocks of ``block_size`` (chosen from the data when None).

    ``order`` gives the row order within cells (default: stable by row index).
    """
    cells = np.asarray(cells, dtype=np.int64)
    n = len(cells)
    if order is None:  # stable: rows keep their order within a cell
        if n_cells <= 1 << 16:  # numpy's radix sort of 16-bit keys: ~5x torch's sort here
            order = np.argsort(cells.astype(np.uint16), kind="stable")
        else:  # torch's stable sort: several times faster than numpy's on int64
            order = torch.sort(read_only_tensor(cells), stable=True).indices.numpy()
    counts = np.bincount(cells, minlength=n_cells)
    if block_size is None:
        block_size = block_size_for(counts)
    blocks_per_cell = -(-counts // block_size)
    n_blocks = int(blocks_per_cell.sum())
    first_block = np.concatenate([[0], np.cumsum(blocks_per_cell)[:-1]])
    first_row = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_cells = np.repeat(np.arange(n_cells), counts)  # = cells[order], without a gather
    slot = np.arange(n) + (first_block * block_size - first_row)[sorted_cells]
    # row numbers as int32 while they fit: the layout lives as long as the padded design
    rows = np.full(n_blocks * block_size, -1, dtype=np.int32 if n < 2**31 else np.int64)
    rows[slot] = order
    block_cell = np.repeat(np.arange(n_cells), blocks_per_cell)
    return Layout(torch.as_tensor(rows.reshape(n_blocks, block_size), device=device),
                  torch.as_tensor(block_cell, device=device), n)



def pad(layout: Layout, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Row-indexed values (n, ...) -> blocked (n_blocks, block_size, ...)."""
    idx = layout.rows.clamp(min=0).long()
    out = at_rows(values, idx.reshape(-1)).view(idx.shape + values.shape[1:])
    mask = layout.valid.reshape(layout.valid.shape + (1,) * (values.dim() - 1))
    return torch.where(mask, out, torch.as_tensor(fill, dtype=values.dtype, device=values.device))


def pad_design(layout: Layout, X, center=None, scale=None, index=None) -> torch.Tensor:
    """Blocked design with an intercept column first (zeros on padding), gathered a chunk of
    blocks at a time into one reused buffer (``index_select`` into a buffer is ~3x faster than
    advanced indexing, which allocates a fresh tensor per chunk). With ``center`` / ``scale``
    the columns are standardised on the way, as ``(x - center) * scale``. ``index`` maps the
    layout's rows to rows of X (a subset of X's rows, without copying X).

    X is an (n, d) tensor or a row source (``causalrec.estimate.design_rows.DesignRows``: its
    ``gather_into(rows, out)`` writes design rows, e.g. read straight from a frame's columns,
    so no (n, d) matrix exists beside the padded one; it is on the CPU, the layout's device
    receives the chunks; its ``release()`` frees its buffers once the design is padded; its
    ``matrix()``, when not None, holds its rows with the intercept, gathered as they are, and
    a zero row last, which padding slots gather)."""
    n_blocks, B = layout.rows.shape
    source = not torch.is_tensor(X)
    # a source's rows formed once, intercept first (``DesignRows.matrix``): whole rows are
    # gathered straight into the blocks
    matrix = X.matrix() if source and layout.rows.device.type == "cpu" else None
    d = X.shape[1]
    dtype = resolve_dtype(str(X.dtype)) if source else X.dtype
    device = layout.rows.device if source else X.device
    Xb = empty((n_blocks, B, d + 1), dtype, device)
    step = max(1, chunk_bytes(device) // (B * (d + 1) * Xb.element_size()))
    if source:
        host = None if device.type == "cpu" else np.empty((min(step, n_blocks) * B, d), X.dtype)
        index = None if index is None else np.asarray(torch.as_tensor(index).cpu())
        if matrix is not None:  # padding slots (-1) gather the matrix's last row, zeros
            zero_row = matrix.shape[0] - 1
            index = None if index is None else np.append(index, zero_row)
    else:
        buf = X.new_empty((min(step, n_blocks) * B, d))
        if center is not None:
            center, scale = (torch.as_tensor(v, dtype=X.dtype, device=X.device) for v in (center, scale))
    for a in range(0, n_blocks, step):
        rows = layout.rows[a:a + step]
        chunk = Xb[a:a + step]
        if matrix is not None:
            at = rows.reshape(-1).numpy()
            at = index[at] if index is not None else np.where(at < 0, zero_row, at)
            torch.index_select(matrix, 0, torch.from_numpy(at), out=chunk.view(-1, d + 1))
            continue
        padding = (rows < 0).unsqueeze(-1)
        rows_of_X = rows.clamp(min=0).reshape(-1)
        if source:
            rows_of_X = rows_of_X.cpu().numpy()
            if index is not None:
                rows_of_X = index[rows_of_X]
            if host is None:  # straight into the padded buffer
                X.gather_into(rows_of_X, chunk.numpy().reshape(-1, d + 1)[:, 1:])
            else:
                X.gather_into(rows_of_X, host[:len(rows_of_X)])
                chunk[..., 1:] = torch.from_numpy(host[:len(rows_of_X)]).to(device).view(rows.shape + (d,))
        else:
            if index is not None:
                rows_of_X = index[rows_of_X]
            gathered = torch.index_select(X, 0, rows_of_X, out=buf[:rows.numel()])
            if center is not None:
                gathered.sub_(center).mul_(scale)
            chunk[..., 1:] = gathered.view(rows.shape + (d,))
        chunk[..., 0] = 1.0
        chunk.masked_fill_(padding, 0.0)
    if source:
        X.release()
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
