"""The pooled fit across Spark tasks: a barrier stage, one task per shard, whose tasks form
a ``torch.distributed`` process group (gloo) and sum the solver's coupling pieces with it."""
from __future__ import annotations

import itertools
import os
import socket
import time
from datetime import timedelta

import pandas as pd
import torch

from ..glm.reducer import OpReducer, combine_in_order

__all__ = ["GlooReducer", "barrier_task"]

TIMEOUT = timedelta(minutes=30)  # a rank waiting this long on the others fails the stage
# fault injection for tests, read on the executor: "rank:n:path" kills that rank's (shard's)
# Python worker at its n-th reduction and creates path; once: not when path exists (the
# barrier stage and the rounds of replay.py)
FAULT_ENV = "CAUSALREC_SPARK_FAULT"


class GlooReducer(OpReducer):
    """Sums and maxima over the ranks of the default process group (one all-reduce each; a
    ``sum_max`` of both: one all-gather, combined on every rank in rank order). Every rank
    receives the same reduced bits, so every rank takes the same decisions.
    ``before_reduce`` (optional) is called before each reduction (fault injection)."""

    def __init__(self, before_reduce=None):
        self.before_reduce = before_reduce
        self.n_calls, self.seconds = 0, 0.0  # all-reduces and the time spent in them

    def _reduce(self, value: torch.Tensor, op: str) -> torch.Tensor:
        import torch.distributed as dist
        self.n_calls += 1
        if self.before_reduce is not None:
            self.before_reduce()
        out = value.detach().to("cpu", copy=True).contiguous()
        start = time.perf_counter()
        if op in ("sum", "max"):
            dist.all_reduce(out, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        else:  # a mixed op (``sum_max_op``): every rank combines the gathered parts in order
            parts = [torch.empty_like(out) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, out)
            out = combine_in_order(parts, op)
        self.seconds += time.perf_counter() - start
        return out.to(value.device)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _fault(rank: int):
    spec = os.environ.get(FAULT_ENV)
    if not spec or int(spec.split(":")[0]) != rank or os.path.exists(spec.split(":", 2)[2]):
        return None
    at, path = int(spec.split(":")[1]), spec.split(":", 2)[2]
    count = itertools.count(1)

    def kill():  # the path checked again: another worker's suspended fit may have fired it
        if next(count) == at and not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)  # as a lost executor: no exception, no cleanup
    return kill


def barrier_task(fit, world: int):
    """A ``mapInPandas`` function for a barrier stage: this partition's rows (one shard, its
    rank = the partition id) -> ``fit(rows, reducer)``'s output, the process group formed
    with the first task's host as master (its port shared by one ``allGather``)."""
    def run(batches):
        import torch.distributed as dist
        from pyspark import BarrierTaskContext
        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        rows = pd.concat(list(batches), ignore_index=True)
        host = ctx.getTaskInfos()[0].address.rsplit(":", 1)[0]
        port = int(ctx.allGather(str(_free_port()) if rank == 0 else "")[0])
        dist.init_process_group("gloo", init_method=f"tcp://{host}:{port}", rank=rank,
                                world_size=world, timeout=TIMEOUT)
        try:
            if len(rows) == 0:
                raise RuntimeError(f"barrier task {rank} received no rows (one shard per task)")
            out = fit(rows, GlooReducer(_fault(rank)))
        finally:
            dist.destroy_process_group()
        yield out
    return run
