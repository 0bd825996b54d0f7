"""causalrec on Apache Spark: per-item effects of a Spark DataFrame, equal to the local
result (DataFrame API only, so Spark Connect works too). Imported only on the Spark path;
needs the ``spark`` extra (``pip install 'causalrec-effects[spark]'``)."""
from ..utils.extras import require

require("pyspark", "the Spark path")
from .driver import SparkEffects, estimate_item_effects_spark  # noqa: E402 - after the check

__all__ = ["SparkEffects", "estimate_item_effects_spark"]
