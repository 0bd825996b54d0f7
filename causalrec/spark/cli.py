"""``causalrec effects|report|audit LOG --spark [MASTER]``: the Parquet log read by Spark and
the command run on the Spark path. Spark's own errors become one-line ``RuntimeError``s, which
the command line prints as it prints every other error."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

__all__ = ["spark_log"]


@contextmanager
def spark_log(args, progress):
    """The Spark frame of ``args.log`` (a Parquet file or folder, or a URL Spark reads), in a
    session started for it (and stopped after) or the active one; Spark's errors inside the
    block become one-line ``RuntimeError``s."""
    if Path(args.log).suffix.lower() == ".csv":
        raise ValueError("--spark reads Parquet (a .parquet file or a folder of them), "
                         f"got {args.log!r}")
    if "://" not in args.log and not Path(args.log).exists():
        raise FileNotFoundError(f"no such log: {args.log}")
    from ..utils.extras import require
    PySparkException = require("pyspark.errors", "--spark").PySparkException
    from py4j.protocol import Py4JError

    # the executors' Python must be this interpreter (causalrec and torch importable there)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        with progress.step(f"starting Spark ({args.spark})"):
            spark, owned = _session(args.spark, progress)
        try:
            with progress.step(f"reading {args.log} with Spark"):
                sdf = spark.read.parquet(str(args.log))
            yield sdf
        finally:
            if owned:
                spark.stop()
    except (PySparkException, Py4JError) as exc:
        raise RuntimeError(f"Spark: {_first_line(exc)}") from None


def _session(url: str, progress):
    """A Spark session for ``url`` and whether this call started it (and so stops it): a
    ``sc://`` URL is a Spark Connect server; an already active session (a notebook's, a
    test's) is reused rather than replaced."""
    from pyspark.sql import SparkSession

    if url.startswith("sc://"):
        return SparkSession.builder.remote(url).getOrCreate(), True
    active = SparkSession.getActiveSession()
    if active is not None:
        progress.say(f"using the active Spark session (master {active.sparkContext.master})")
        return active, False
    spark = (SparkSession.builder.master(url).appName("causalrec")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark, True


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
