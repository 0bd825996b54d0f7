"""Where the rows live decides how a fit runs, and it is decided here only.

A fit is one skeleton (``causalrec.estimate.plan``): a plan built once, the same shard
function run by a backend, the shards' parts finished by the plan. A backend is the only
piece that knows where the rows are: ``causalrec.estimate.local.LocalBackend`` (a pandas
frame in this process) or ``causalrec.spark.backend.SparkBackend`` (a Spark DataFrame; its
tasks run the shard function on the executors). ``backend_for`` picks one from the data's
type; pyspark is imported only when the data is a Spark frame.
"""
from __future__ import annotations

__all__ = ["backend_for", "is_distributed"]


def is_distributed(data) -> bool:
    """Whether ``data`` is a Spark DataFrame (classic or Connect), judged by its type's
    module without importing pyspark."""
    return type(data).__module__.startswith("pyspark")


def backend_for(data):
    """The backend class for ``data``: ``SparkBackend`` for a Spark DataFrame, else
    ``LocalBackend``. Its ``item_effects(data, ...)`` runs ``estimate_item_effects``."""
    if is_distributed(data):
        from .spark.backend import SparkBackend
        return SparkBackend
    from .estimate.local import LocalBackend
    return LocalBackend
