"""The Spark path against the in-process estimator, and a scale-out simulation of the pooled fit.

    python benchmarks/bench_spark.py compare --path local --nuisance pooled   # one per process:
    python benchmarks/bench_spark.py compare --path spark --nuisance pooled   # peak RSS is per process
    python benchmarks/bench_spark.py compare --path spark --no-barrier --rows 200000 --items 200
    python benchmarks/bench_spark.py scaleout --shards 1,2,4,8

``compare``: the bench_estimator data (Zipf items, d confounders) written once to Parquet;
``local`` reads it with pandas and runs ``estimate_item_effects``, ``spark`` reads it with a
``local[2]`` session and runs the Spark path. Time = read + estimate (not the session start).
Peak RSS: the driver process's (``getrusage``) and, sampled from /proc every second, each
child process's own peak (``VmHWM``): the JVM and Spark's Python workers, with the peak of
their summed RSS. ``--no-barrier``: the pooled fit as rounds of plain tasks (``barrier=False``);
the JSON adds the log line with the rounds and the resumed round tasks.
``scaleout``: ``ItemEffectEstimator(shards=S)`` in one process (ThreadReducer): per-shard
compute time, collective rounds (reducer calls) and bytes summed per Newton step.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_estimator import generate  # noqa: E402


def _rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # the process ended
        pass
    return 0


def _descendants(root: int) -> list[int]:
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    out, frontier = [], [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        out += frontier
    return out


class ChildMemory:
    """Samples the driver's descendant processes every ``every`` seconds in a thread: each
    one's own peak RSS (VmHWM, by kind: "java" or "python") and the peak of their summed RSS."""

    def __init__(self, every: float = 1.0):
        import threading
        self.every, self.peaks, self.kinds, self.peak_sum_kb = every, {}, {}, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while True:
            self.sample()
            if self._stop.wait(self.every):
                self.sample()
                return

    def sample(self):
        total = 0
        for pid in _descendants(os.getpid()):
            if pid not in self.kinds:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        name = os.path.basename(fh.read().split(b"\0")[0].decode())
                except OSError:
                    continue
                self.kinds[pid] = "java" if "java" in name else "python" if "python" in name else name
            self.peaks[pid] = max(self.peaks.get(pid, 0), _status_kb(pid, "VmHWM"))
            total += _status_kb(pid, "VmRSS")
        self.peak_sum_kb = max(self.peak_sum_kb, total)

    def summary(self) -> dict:
        gb = lambda kb: round(kb / 2**20, 2)
        by_kind = {}
        for pid, kb in self.peaks.items():
            by_kind.setdefault(self.kinds.get(pid, "?"), []).append(kb)
        return dict(children_peak_sum_gb=gb(self.peak_sum_kb),
                    **{f"{kind}_peak_gb": gb(max(v)) for kind, v in by_kind.items()},
                    **{f"{kind}_processes": len(v) for kind, v in by_kind.items()})


def _data_path(args) -> Path:
    """The Parquet log of these sizes, written once."""
    path = Path(args.data) / f"log_{args.items}_{args.rows}_{args.d}.parquet"
    if not path.exists():
        df, _, _ = generate(args.items, args.rows, args.d)
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
    return path


def compare(args) -> dict:
    import causalrec as cr
    path = _data_path(args)
    confounders = [f"x{j}" for j in range(args.d)]
    options = dict(item="item", treatment="t", outcome="y", confounders=confounders,
                   nuisance=args.nuisance, device="cpu")
    rss_before = _rss_gb()
    children = ChildMemory()
    if args.path == "spark":
        os.environ["PYSPARK_PYTHON"] = sys.executable
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
                 .config("spark.driver.memory", args.driver_memory).getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        start = time.perf_counter()
        lines = _LogLines("causalrec.spark")
        with children, lines:
            effects = cr.estimate_item_effects(spark.read.parquet(str(path)), shards=2,
                                               barrier=args.barrier, **options)
    else:
        import pandas as pd
        start = time.perf_counter()
        effects = cr.estimate_item_effects(pd.read_parquet(path), **options)
    seconds = time.perf_counter() - start
    if args.path == "spark":
        spark.stop()
    return dict(path=args.path, nuisance=args.nuisance, items=args.items, rows=args.rows,
                d=args.d, seconds=round(seconds, 1), items_ok=int((effects["status"] == "ok").sum()),
                mean_ate=float(effects["ate"].mean()), rss_before_gb=rss_before,
                peak_rss_gb=_rss_gb(), **(children.summary() if args.path == "spark" else {}),
                **({"log": lines.lines[-1:]} if args.path == "spark" else {}))


class _LogLines(logging.Handler):
    """The INFO lines of a logger, kept while in a ``with`` block."""

    def __init__(self, name):
        super().__init__(logging.INFO)
        self.logger, self.lines = logging.getLogger(name), []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        self.level = self.logger.level
        self.logger.addHandler(self), self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self), self.logger.setLevel(self.level)


class _Counted:
    """A reducer view that counts its calls and the bytes of what it sums."""

    def __init__(self, view, tally):
        self.view, self.tally = view, tally

    def sum(self, value):
        self._count(value)
        return self.view.sum(value)

    def max(self, value):
        self._count(value)
        return self.view.max(value)

    def _count(self, value):
        if self.view.rank == 0:  # every rank calls equally often with equal shapes
            self.tally["calls"] += 1
            self.tally["bytes"] += value.numel() * value.element_size()


def scaleout(args) -> list[dict]:
    import causalrec.estimate.nuisance as nuisance
    from causalrec.estimate import ItemEffectEstimator
    from causalrec.glm import ThreadReducer
    from causalrec.schema import InteractionLog

    df, _, confounders = generate(args.items, args.rows, args.d)
    log = InteractionLog(df, item="item", treatment="t", outcome="y", confounders=confounders)
    rows = []
    for S in [int(s) for s in args.shards.split(",")]:
        tally = dict(calls=0, bytes=0, shard_seconds=[], newton_steps=0)

        class Counting(ThreadReducer):
            def view(self, rank):
                return _Counted(super().view(rank), tally)

            def run(self, fn, shards):
                results = super().run(fn, shards)
                tally["newton_steps"] += sum(m.n_iter_ for models in results[0][2]
                                             for m in models.values())
                return results

        fit_shard = nuisance._fit_shard

        def timed(*a, **k):  # one shard's whole cross-fit, in its own thread's CPU time
            start = time.thread_time()
            out = fit_shard(*a, **k)
            tally["shard_seconds"].append(time.thread_time() - start)
            return out

        nuisance.ThreadReducer, nuisance._fit_shard = Counting, timed
        try:
            torch.set_num_threads(1)
            start = time.perf_counter()
            est = ItemEffectEstimator(nuisance="pooled", shards=S, device="cpu").fit(log)
            wall = time.perf_counter() - start
        finally:
            nuisance.ThreadReducer, nuisance._fit_shard = ThreadReducer, fit_shard
        if S == 1:  # one shard: the plain Reducer, no ThreadReducer run; its fits are kept
            tally["newton_steps"] = sum(m.n_iter_ for models in est.nuisance_fits_
                                        for m in models.values())
        steps = max(tally["newton_steps"], 1)
        shard_s = np.array(tally["shard_seconds"])
        rows.append(dict(shards=S, wall_seconds=round(wall, 2),
                         shard_cpu_seconds_max=round(float(shard_s.max()), 2),
                         shard_cpu_seconds_mean=round(float(shard_s.mean()), 2),
                         collective_rounds=tally["calls"], newton_steps=tally["newton_steps"],
                         rounds_per_step=round(tally["calls"] / steps, 1),
                         bytes_per_step=round(tally["bytes"] / steps),
                         mean_ate=float(est.effects_["ate"].mean())))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("compare", "scaleout", "data"))
    parser.add_argument("--path", choices=("local", "spark"), default="local")
    parser.add_argument("--nuisance", default="pooled")
    parser.add_argument("--no-barrier", dest="barrier", action="store_false",
                        help="the pooled fit as rounds of plain tasks (barrier=False)")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--shards", default="1,2,4,8")
    parser.add_argument("--data", default="/tmp/causalrec-bench")
    parser.add_argument("--driver-memory", default="4g", help="spark.driver.memory (local mode: "
                        "the JVM that runs the tasks too)")
    args = parser.parse_args(argv)
    if args.what == "data":  # the Parquet log alone (its generation is not in a run's peak RSS)
        print(_data_path(args))
    elif args.what == "compare":
        print(json.dumps(compare(args)))
    else:
        scaleout(args)


if __name__ == "__main__":
    main()
