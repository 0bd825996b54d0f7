"""The pooled fit across Spark tasks: a barrier stage, one task per shard, whose tasks form
a ``torch.distributed`` process group (gloo) and sum the solver's coupling pieces with it."""
from __future__ import annotations

import socket
from datetime import timedelta

import pandas as pd
import torch

from ..glm.reducer import Reducer

__all__ = ["GlooReducer", "barrier_task"]

TIMEOUT = timedelta(minutes=30)  # a rank waiting this long on the others fails the stage


class GlooReducer(Reducer):
    """Sums and maxima over the ranks of the default process group (one all-reduce each).
    Every rank receives the same reduced bits, so every rank takes the same decisions."""

    def _reduce(self, value: torch.Tensor, op) -> torch.Tensor:
        import torch.distributed as dist
        out = value.detach().to("cpu", copy=True).contiguous()
        dist.all_reduce(out, op=op)
        return out.to(value.device)

    def sum(self, value):
        import torch.distributed as dist
        return self._reduce(value, dist.ReduceOp.SUM)

    def max(self, value):
        import torch.distributed as dist
        return self._reduce(value, dist.ReduceOp.MAX)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


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
            out = fit(rows, GlooReducer())
        finally:
            dist.destroy_process_group()
        yield out
    return run
