"""The pooled fit without barrier mode: rounds of ordinary tasks over the cached shards.

The solver's coupling points are its reducer calls, made in the same order on every shard
(``glm/reducer.py``). The driver keeps the log of the values reduced so far; each round is one
Spark job of one plain task per shard over the persisted, shard-partitioned rows. A task runs
its shard's fit with a ``LogReducer`` that answers reductions 1..k from the log and, at
reduction k+1, hands its partial value (and the op) back and waits; the driver combines the
partials in shard order (``combine_in_order``, as ``ThreadReducer``: the same bits), appends
them to the log and launches the next round. A round in which every task reaches the end of
its fit returns the fits' outputs, as the barrier task does. The rows never leave the
executors, only the partials (a few hundred bytes) and the log.

Between rounds the waiting fit stays suspended in a daemon thread of its Python worker (keyed
by job and shard): a task of the next round that lands on that worker resumes it with the
longer log (one reduction's compute). A task that lands elsewhere (or after the worker died,
or after ``IDLE_S`` without a round) rebuilds its shard and *replays* the fit from the start,
answering from the log: the same code and the same inputs, so the same partials (deterministic,
which also makes a retried task safe). A replay costs a rebuild and the fit up to reduction k,
so the worst case (no task ever resumed) is quadratic in the number of reductions; every round
costs a Spark job. A worker may hold a suspended fit of several shards of a job (one each).
"""
from __future__ import annotations

import logging
import pickle
import queue
import threading
import time
import uuid

import pandas as pd
import torch

from ..glm.reducer import OpReducer, combine_in_order
from .shard import OUTPUT_SCHEMA, payload_row

__all__ = ["LogReducer", "round_task", "run_rounds"]

log_ = logging.getLogger("causalrec.spark")
IDLE_S = 120.0  # a suspended fit with no round for this long exits (a later task replays)
PARTIAL = -2    # row_id of a task's partial-value row (the outputs' payload row has -1)
_SOLVERS: dict = {}  # (job, shard) -> _Solver, in this Python worker process
_LOCK = threading.Lock()


class _Abandon(BaseException):
    """Ends a suspended fit's thread (a BaseException: no ``except Exception`` swallows it)."""


class LogReducer(OpReducer):
    """Answers reduction i from ``log[i]`` (op, reduced value); at the first reduction the
    log does not hold, ``wait(i, op, partial)`` returns the longer log (or raises).
    ``before_reduce`` (optional) runs before each reduction (fault injection)."""

    def __init__(self, log, wait, before_reduce=None):
        self.log, self.wait, self.before_reduce = log, wait, before_reduce
        self.n_calls, self.seconds = 0, 0.0  # reductions, and the time spent waiting on rounds

    def _reduce(self, value: torch.Tensor, op: str) -> torch.Tensor:
        i, self.n_calls = self.n_calls, self.n_calls + 1
        if self.before_reduce is not None:
            self.before_reduce()
        if i >= len(self.log):
            start = time.perf_counter()
            self.log = self.wait(i, op, value.detach().to("cpu", copy=True))
            self.seconds += time.perf_counter() - start
        logged_op, reduced = self.log[i]
        if logged_op != op or tuple(reduced.shape) != tuple(value.shape):
            raise RuntimeError(f"reduction {i} is a {op} of shape {tuple(value.shape)}, the log "
                               f"holds a {logged_op} of shape {tuple(reduced.shape)}: the shards' "
                               "fits are not deterministic")
        return reduced.to(device=value.device, dtype=value.dtype, copy=True)


class _Solver:
    """One shard's fit in a daemon thread, suspended at each reduction the log lacks until a
    task hands it a longer log. ``messages`` carries ("partial", i, op, value), ("done",
    output) or ("error", exception) to the task waiting on it."""

    def __init__(self, key, fit, rows, log, before_reduce):
        self.key, self.messages, self.logs = key, queue.Queue(), queue.Queue()
        self.lock, self.dead, self.last = threading.Lock(), False, None
        self.reducer = LogReducer(log, self._wait, before_reduce)
        threading.Thread(target=self._main, args=(fit, rows), daemon=True).start()

    def _main(self, fit, rows):
        try:
            self.messages.put(("done", fit(rows, self.reducer)))
        except _Abandon:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised by the task
            self.messages.put(("error", exc))
        finally:
            with _LOCK:
                if _SOLVERS.get(self.key) is self:
                    del _SOLVERS[self.key]

    def _wait(self, i, op, value):
        self.last = ("partial", i, op, value)
        self.messages.put(self.last)
        while True:
            try:
                log = self.logs.get(timeout=IDLE_S)
                break
            except queue.Empty:
                with self.lock:  # no task may hand a log between this check and the exit
                    if self.logs.empty():
                        self.dead = True
                        raise _Abandon from None
        if log is None:
            raise _Abandon
        return log

    def resume(self, log) -> bool:
        """Hand the longer ``log`` to the waiting fit; False if it has exited, or cannot use it."""
        i = self.last[1]
        if i == len(log):  # the log has not grown (a retried task): the same partial again
            self.messages.put(self.last)
            return True
        with self.lock:
            if self.dead or i > len(log):
                return False
            self.logs.put(log)
        return True

    def abandon(self):
        with self.lock:
            self.logs.put(None)


def _advance(job, shard, fit, rows, log, before_reduce):
    """This round's message for ``shard``: from its suspended fit if this worker holds one
    that can use ``log``, else from a fresh fit that replays ``log``. -> (message, resumed)."""
    with _LOCK:
        solver = _SOLVERS.pop((job, shard), None)
    resumed = solver is not None and solver.resume(log)
    if not resumed:
        if solver is not None:
            solver.abandon()
        solver = _Solver((job, shard), fit, rows, list(log), before_reduce)
    message = solver.messages.get()
    if message[0] == "partial":
        with _LOCK:
            _SOLVERS[(job, shard)] = solver
    else:  # the job is over (or failed): this worker's other fits of it are stale
        with _LOCK:
            stale = [s for k, s in _SOLVERS.items() if k[0] == job]
        for other in stale:
            other.abandon()
    return message, resumed


def round_task(fit, job: str, log: tuple, fault=None):
    """A ``mapInPandas`` function for one round: this partition's rows (one shard, the
    partition id) -> a partial-value row (row_id ``PARTIAL``, payload pickle of (shard, i, op,
    value, resumed)), or ``fit(rows, reducer)``'s output when the fit ends. ``fault(shard)``
    (optional) gives the shard's ``before_reduce``."""
    def run(batches):
        from pyspark import TaskContext
        shard = TaskContext.get().partitionId()
        rows = pd.concat(list(batches), ignore_index=True)  # read even when resuming: drains the input
        if len(rows) == 0:
            raise RuntimeError(f"round task {shard} received no rows (one shard per task)")
        before = fault(shard) if fault is not None else None
        message, resumed = _advance(job, shard, fit, rows, log, before)
        if message[0] == "error":
            raise message[1]
        if message[0] == "done":
            yield message[1]
            return
        _, i, op, value = message
        yield payload_row(pickle.dumps((shard, i, op, value, resumed)), row_id=PARTIAL)
    return run


def run_rounds(parts, fit, n_shards: int, row_outputs: bool, fault=None):
    """Rounds of ``round_task`` over ``parts`` (persisted, partition s = shard s) until every
    shard's fit ends. -> (payloads, per-row outputs (persisted) or None, stats dict)."""
    from pyspark.sql import functions as F
    job, log, resumed, start = uuid.uuid4().hex, [], 0, time.perf_counter()
    while True:
        # the log rides in the function's closure (Spark broadcasts a large one itself)
        out = parts.mapInPandas(round_task(fit, job, tuple(log), fault), OUTPUT_SCHEMA)
        if row_outputs:
            out = out.persist()
        got = out.where(F.col("payload").isNotNull()).select("row_id", "payload").collect()
        partials = [pickle.loads(r["payload"]) for r in got if r["row_id"] == PARTIAL]
        if not partials:
            rows = out.where(F.col("payload").isNull()).drop("payload") if row_outputs else None
            stats = dict(rounds=len(log) + 1, resumed=resumed,
                         tasks=len(log) * n_shards, seconds=time.perf_counter() - start)
            return [r["payload"] for r in got], rows, stats
        if row_outputs:
            out.unpersist()
        partials.sort(key=lambda p: p[0])
        if (len(partials) != len(got) or [p[0] for p in partials] != list(range(n_shards))
                or {(p[1], p[2]) for p in partials} != {(len(log), partials[0][2])}):
            raise RuntimeError(f"round {len(log) + 1}: the shards did not all stop at reduction "
                               f"{len(log) + 1} with the same op")
        op = partials[0][2]
        log.append((op, combine_in_order([p[3] for p in partials], op)))
        resumed += sum(p[4] for p in partials)
