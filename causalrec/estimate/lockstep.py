"""Several independent fits that share one reducer, run side by side so that their
reductions travel together.

On Spark without barrier mode every reduction is a round (a Spark job, ``spark/replay.py``);
the penalty grid's fits (``nuisance.cross_fit_tuned``) are independent of each other, so
their k-th reductions can go out as one: each fit runs in its own thread, and when every fit
still running has reached its next reduction, their values are concatenated (per dtype, in
fit order) and reduced by the outer reducer at once, sums and maxima in one ``sum_max``.
Reductions are elementwise, so each fit receives the same values as it would alone: the same
numbers, with about as many rounds as the longest fit instead of the sum of all. The
composition of every batch is deterministic (batch k holds the k-th reduction of each fit
that makes one), which the rounds' replay needs.
"""
from __future__ import annotations

import threading

import torch

from ..glm.reducer import Reducer

__all__ = ["run_in_lockstep"]


class _Lockstep:
    def __init__(self, outer: Reducer, n: int):
        self.outer, self.live = outer, n
        self.cond = threading.Condition()
        self.pending: dict = {}  # fit -> (op, value)
        self.answers: dict = {}  # fit -> reduced value
        self.broken: BaseException | None = None

    def reduce(self, fit: int, value: torch.Tensor, op: str) -> torch.Tensor:
        with self.cond:
            self.pending[fit] = (op, value)
            self._flush_if_ready()
            while fit not in self.answers and self.broken is None:
                self.cond.wait()
            if fit not in self.answers:
                raise self.broken
            return self.answers.pop(fit)

    def done(self) -> None:
        """A fit has ended (or failed): the others no longer wait for it."""
        with self.cond:
            self.live -= 1
            self._flush_if_ready()

    def _flush_if_ready(self) -> None:
        """With the lock held: reduce the batch once every running fit is waiting on it."""
        if not self.pending or len(self.pending) < self.live or self.broken is not None:
            return
        try:
            groups: dict = {}  # dtype -> op -> fits, in fit order
            for fit in sorted(self.pending):
                op, value = self.pending[fit]
                groups.setdefault(value.dtype, {}).setdefault(op, []).append(fit)
            for ops in groups.values():
                device = self.pending[next(iter(ops.values()))[0]][1].device
                flat = {op: torch.cat([self.pending[f][1].detach().reshape(-1).to(device)
                                       for f in fits]) for op, fits in ops.items()}
                if len(flat) == 2:  # sums and maxima: one reduction (``Reducer.sum_max``)
                    out = dict(zip(("sum", "max"), self.outer.sum_max(flat["sum"], flat["max"])))
                else:
                    out = {op: getattr(self.outer, op)(value) for op, value in flat.items()}
                for op, fits in ops.items():
                    values = [self.pending[f][1] for f in fits]
                    for f, v in zip(fits, torch.split(out[op], [v.numel() for v in values])):
                        self.answers[f] = v.reshape(self.pending[f][1].shape).clone().to(
                            self.pending[f][1].device)
            self.pending.clear()
        except BaseException as exc:  # noqa: BLE001 - every waiting fit re-raises it
            self.broken = exc
        self.cond.notify_all()


class _View(Reducer):
    def __init__(self, lockstep: _Lockstep, fit: int):
        self.lockstep, self.fit = lockstep, fit

    def sum(self, value):
        return self.lockstep.reduce(self.fit, value, "sum")

    def max(self, value):
        return self.lockstep.reduce(self.fit, value, "max")


def run_in_lockstep(fits: list, reducer: Reducer) -> list:
    """``[fit(view) for fit in fits]``, each in its own thread with a view of ``reducer`` that
    sends its reductions together with the other fits' (see the module docstring); the
    results in order. The first failure is raised once every thread has ended."""
    if len(fits) == 1:
        return [fits[0](reducer)]
    lockstep = _Lockstep(reducer, len(fits))
    results, errors = [None] * len(fits), [None] * len(fits)

    def run(i):
        try:
            results[i] = fits[i](_View(lockstep, i))
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors[i] = exc
        finally:
            lockstep.done()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(fits))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [e for e in errors if e is not None]
    if failed:
        raise (lockstep.broken or failed[0])
    return results
