"""Where the rows live decides how a fit runs, and it is decided here only.

A fit is one skeleton (``causalrec.estimate.plan``): a plan built once, the same shard
function run by a backend, the shards' parts finished by the plan. A backend is the only
piece that knows where the rows are: the local one (a pandas frame in this process:
``causalrec.estimate.local.LocalBackend``, ``fairness.rows.LocalAuditRows``, ...) or the
Spark one (``causalrec.spark``: its tasks run the same functions on the executors).

``backend_for(data, local, spark=...)`` is the one question "is this a Spark frame?": each
public entry point passes its local implementation and names its Spark counterpart, which
is imported only when the data is a Spark frame (pyspark stays an optional extra). This
module is the one door from the lower layers up to ``causalrec.spark``
(tests/project/test_imports.py allows those lazy imports here and nowhere else).
"""
from __future__ import annotations

__all__ = ["backend_for", "is_distributed", "SPARK_PARTS"]

SPARK_PARTS = ("item_effects", "audit_rows", "refutations", "uplift_rows")


def is_distributed(data) -> bool:
    """Whether ``data`` is a Spark DataFrame (classic or Connect), judged by its type's
    module without importing pyspark."""
    return type(data).__module__.startswith("pyspark")


def backend_for(data, local, *, spark: str):
    """``local`` for in-process data; for a Spark DataFrame the Spark counterpart named by
    ``spark`` (one of ``SPARK_PARTS``): the item-effects call, the audit's rows, the
    refutation call, the uplift model's rows."""
    if spark not in SPARK_PARTS:
        raise ValueError(f"spark must be one of {SPARK_PARTS}, got {spark!r}")
    if not is_distributed(data):
        return local
    if spark == "item_effects":
        from .spark.driver import item_effects
        return item_effects
    if spark == "audit_rows":
        from .spark.audit import SparkAuditRows
        return SparkAuditRows
    if spark == "refutations":
        from .spark.refute import refute_item_effects_spark
        return refute_item_effects_spark
    from .spark.uplift import SparkUpliftRows
    return SparkUpliftRows
