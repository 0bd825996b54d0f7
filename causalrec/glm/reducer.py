"""Reducers: how a solver that holds some of the segments learns the sums over all of them.

Everything in ``fit_glm`` that couples segments goes through a reducer: the sums that build a
pooled model's Schur complement and shared gradient, the objective of each line-search trial,
and the statistics behind every global stop / refresh / halving decision. Each process (or
thread, or Spark task) runs the same solver on its own segments and calls the reducer at the
same points in the same order, so every one of them takes the same decisions from the same
summed numbers, and the result equals a fit of all segments at once.
"""
from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import torch

__all__ = ["Reducer", "OpReducer", "ThreadReducer", "combine_in_order", "sum_max_op"]

COMBINE = {"sum": torch.add, "max": torch.maximum}


def sum_max_op(n_sum: int) -> str:
    """The op of one reduction of ``cat([s, m])``: the first ``n_sum`` entries summed, the
    rest maximised (``Reducer.sum_max``)."""
    return f"sum|max:{n_sum}"


def combine_in_order(values: list, op: str) -> torch.Tensor:
    """The solvers' partial values (in shard order) reduced by ``op`` ("sum", "max" or a
    ``sum_max_op``) in that fixed order, so every reducer that uses it returns bitwise the
    same result."""
    out = values[0].clone()
    k = int(op.split(":")[1]) if op.startswith("sum|max:") else None
    for other in values[1:]:
        other = other.to(out.device)
        if k is None:
            out = COMBINE[op](out, other)
        else:
            out = torch.cat([out[:k] + other[:k], torch.maximum(out[k:], other[k:])])
    return out


class Reducer:
    """The identity reducer: one solver holds every segment."""

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum of ``value`` (this solver's partial sum) over all solvers."""
        return value

    def max(self, value: torch.Tensor) -> torch.Tensor:
        """Elementwise maximum of ``value`` over all solvers."""
        return value

    def sum_max(self, s: torch.Tensor, m: torch.Tensor) -> tuple:
        """(``sum(s)``, ``max(m)``) of two flat tensors of one dtype (the independent fits
        run side by side, ``estimate/lockstep.py``, often wait on both at once)."""
        return self.sum(s), self.max(m)


class OpReducer(Reducer):
    """A reducer whose every reduction goes through one ``_reduce(value, op)`` (op: "sum",
    "max" or a ``sum_max_op``): a ``sum_max`` is then one reduction, not two."""

    def _reduce(self, value: torch.Tensor, op: str) -> torch.Tensor:
        raise NotImplementedError

    def sum(self, value):
        return self._reduce(value, "sum")

    def max(self, value):
        return self._reduce(value, "max")

    def sum_max(self, s, m):
        out = self._reduce(torch.cat([s, m.to(s.device)]), sum_max_op(s.numel()))
        return out[:s.numel()], out[s.numel():]


class ThreadReducer:
    """S solvers in S threads of one process, summed in a fixed (shard) order.

    ``run(fn, shards)`` calls ``fn(shard, reducer_view)`` for every shard in its own thread and
    returns the results in shard order. It is the pattern a distributed backend follows (one
    all-reduce per call) and lets tests check that sharded fits equal whole ones.
    """

    def __init__(self, n_shards: int):
        if n_shards < 1:
            raise ValueError(f"n_shards must be a positive integer, got {n_shards!r}")
        self.n_shards = n_shards
        self._barrier = threading.Barrier(n_shards)
        # two sets of slots, alternating: a rank writes its k-th value into set k % 2 only
        # after every rank has passed the (k-1)-th wait, so after all have read set k % 2 at
        # reduction k-2 (one wait per reduction instead of a second one before the overwrite)
        self._slots: list = [[None] * n_shards, [None] * n_shards]
        self._calls: list = [0] * n_shards

    def _collect(self, rank: int, value: torch.Tensor, op: str) -> torch.Tensor:
        slots = self._slots[self._calls[rank] % 2]
        self._calls[rank] += 1
        slots[rank] = value
        self._barrier.wait()
        return combine_in_order(slots, op)  # every rank gets bitwise the same result

    def view(self, rank: int) -> "_RankView":
        return _RankView(self, rank)

    def run(self, fn, shards: list) -> list:
        if len(shards) != self.n_shards:
            raise ValueError(f"expected {self.n_shards} shards, got {len(shards)}")
        if self.n_shards == 1:
            return [fn(shards[0], self.view(0))]
        def guarded(rank, shard):
            try:
                return fn(shard, self.view(rank))
            except BaseException:
                self._barrier.abort()  # one failed shard must not leave the others waiting
                raise

        with ThreadPoolExecutor(self.n_shards) as pool:
            futures = [pool.submit(guarded, rank, shard) for rank, shard in enumerate(shards)]
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and f.exception() is not None
                      and not isinstance(f.exception(), threading.BrokenBarrierError)]
            if failed:  # the shard that failed first, not one it broke the barrier of
                raise failed[0].exception()
            return [f.result() for f in futures]


class _RankView(OpReducer):
    def __init__(self, parent: ThreadReducer, rank: int):
        self.parent, self.rank = parent, rank

    def _reduce(self, value, op):
        return self.parent._collect(self.rank, value, op)
