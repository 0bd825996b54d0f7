"""Time the batched estimator against EconML's LinearDRLearner run per item in a loop.

    python benchmarks/bench_estimator.py --items 1000 --rows 1000000 --d 64 --econml-items 20

Data: d standard-normal confounders, Zipf-distributed rows per item, a logistic logging policy
and a logistic click model whose item intercepts and slopes vary around shared ones; each
item's true ATE is the mean over its rows of P(click | recommended) - P(click | not).
Prints one Markdown table row (paste it into benchmarks/README.md) and writes JSON if asked.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import warnings

import numpy as np
import pandas as pd
import torch


def generate(n_items: int, n_rows: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    item = rng.choice(n_items, size=n_rows, p=weights / weights.sum()).astype(np.int32)
    X = rng.standard_normal((n_rows, d), dtype=np.float32)
    scale = 1.0 / np.sqrt(d)
    beta_e = rng.normal(0, 0.7 * scale, d)
    beta_y = rng.normal(0, 1.0 * scale, d)
    dev_e = rng.normal(0, 0.3 * scale, (n_items, d)).astype(np.float32)
    a_e = rng.normal(-1.0, 0.7, n_items)
    a_y = rng.normal(-1.5, 0.5, n_items)
    tau = rng.gamma(2.0, 0.3, n_items) * (rng.random(n_items) < 0.7)
    confound = X @ beta_e.astype(np.float32)
    logit_e = a_e[item] + confound + np.einsum("ij,ij->i", X, dev_e[item])
    e = 1 / (1 + np.exp(-np.clip(logit_e, -3.5, 3.5)))
    t = (rng.random(n_rows) < e).astype(np.int8)
    base = a_y[item] + X @ beta_y.astype(np.float32) + 0.8 * confound
    p0, p1 = 1 / (1 + np.exp(-base)), 1 / (1 + np.exp(-(base + tau[item])))
    y = (rng.random(n_rows) < np.where(t == 1, p1, p0)).astype(np.int8)
    cols = {f"x{j}": X[:, j] for j in range(d)}
    df = pd.DataFrame({"item": item, "t": t, "y": y, **cols})
    truth = pd.Series(p1 - p0).groupby(item).mean()
    return df, truth, [f"x{j}" for j in range(d)]


CLOCK = [time.perf_counter]  # --clock cpu: time.process_time


def run_ours(df, confounders, device, dtype, nuisance="pooled", n_repeats="auto"):
    import causalrec as cr
    start = CLOCK[0]()
    effects = cr.estimate_item_effects(df, item="item", treatment="t", outcome="y",
                                       confounders=confounders, device=device, dtype=dtype,
                                       nuisance=nuisance, n_repeats=n_repeats)
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.synchronize()
    return effects.set_index("item"), CLOCK[0]() - start


def run_econml(df, confounders, items):
    from econml.dr import LinearDRLearner
    from sklearn.linear_model import LogisticRegression
    estimates = {}
    warnings.simplefilter("ignore")  # EconML warns about y's shape on every fit
    start = CLOCK[0]()
    for k in items:
        rows = df[df["item"] == k]
        learner = LinearDRLearner(model_propensity=LogisticRegression(max_iter=1000),
                                  model_regression=LogisticRegression(max_iter=1000),
                                  discrete_outcome=True, cv=2, min_propensity=0.01,
                                  random_state=0)
        learner.fit(rows["y"].to_numpy(), rows["t"].to_numpy(), X=None,
                    W=rows[confounders].to_numpy())
        estimates[k] = float(np.ravel(learner.ate())[0])
    return pd.Series(estimates), CLOCK[0]() - start


def _status_gb(field: str, pid="self") -> float:
    """A ``VmRSS`` / ``VmHWM`` line of /proc/<pid>/status, in GB (2**30 bytes)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    raise KeyError(field)


def peak_rss_of_call(fn):
    """(fn(), peak RSS in GB while it ran, RSS before it): the kernel's high-water mark is
    reset first (``clear_refs`` 5), so data generation does not count."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _status_gb("VmRSS")
    out = fn()
    return out, _status_gb("VmHWM"), before


def memory(df, confounders, args) -> dict:
    """Peak RSS of one estimator call against the frame's own size (issue 15)."""
    frame_gb = df.memory_usage(deep=True).sum() / 2**30
    (effects, seconds), peak, before = peak_rss_of_call(
        lambda: run_ours(df, confounders, args.device, args.dtype, args.nuisance, args.n_repeats))
    return dict(nuisance=args.nuisance, frame_gb=round(frame_gb, 3), rss_before_gb=round(before, 3),
                peak_rss_gb=round(peak, 3), peak_over_frame=round(peak / frame_gb, 2),
                seconds=round(seconds, 1), items_ok=int((effects["status"] == "ok").sum()),
                mean_ate=float(effects["ate"].mean()))


def rmse(estimate, truth):
    return float(np.sqrt(((estimate - truth.loc[estimate.index]) ** 2).mean()))


def time_device(df, truth, confounders, device, args):
    """(effects, seconds, result fields) of the estimator on one device; with args.profile
    one more run timed by phase."""
    run_ours(df.iloc[:20_000], confounders, device, args.dtype)  # warm-up (CUDA init)
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    runs = [run_ours(df, confounders, device, args.dtype, args.nuisance, args.n_repeats)
            for _ in range(args.repeats)]
    effects, seconds = runs[0][0], min(r[1] for r in runs)
    ok = effects[effects["status"] == "ok"]
    result = dict(device=str(effects.attrs.get("device", device)), seconds=round(seconds, 2),
                  items_ok=len(ok), rmse_all=round(rmse(ok["ate"], truth), 5),
                  peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2))
    if cuda:
        result["gpu"] = torch.cuda.get_device_name()
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if args.profile:
        from profile_phases import phase_timer
        with phase_timer(CLOCK[0]) as phases:
            _, profiled = run_ours(df, confounders, device, args.dtype, args.nuisance,
                                   args.n_repeats)
        phases["other"] = profiled - sum(phases.values())
        result["profile_seconds"] = round(profiled, 2)
        result["phases"] = {name: round(value, 3) for name, value in phases.items()}
    return effects, seconds, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--econml-items", type=int, default=20,
                        help="items the EconML loop runs on (0 skips it)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each side this many times and keep the fastest")
    parser.add_argument("--also-devices", default="",
                        help="comma-separated devices timed on the same data after --device "
                             "(e.g. cpu), in this process; results under 'also'")
    parser.add_argument("--profile", action="store_true",
                        help="one more run, timed by phase (validation, design spec, fold "
                             "hashing, layout, transfers, device fits; see profile_phases.py)")
    parser.add_argument("--nuisance", default="pooled", help="pooled or per_item")
    parser.add_argument("--n-repeats", default="auto", type=lambda v: v if v == "auto" else int(v),
                        help="cross-fitting splits (the estimator's n_repeats; default auto)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time both sides (and --profile's phases) in wall seconds, or in "
                             "CPU seconds of the process: on a loaded shared machine the "
                             "steadier number, comparable when both sides run one thread "
                             "(OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)")
    parser.add_argument("--memory", action="store_true",
                        help="only one estimator call, no warm-up: its peak RSS over the "
                             "frame's size (memory_usage(deep=True))")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter

    df, truth, confounders = generate(args.items, args.rows, args.d)
    if args.memory:
        result = dict(items=args.items, rows=args.rows, d=args.d, **memory(df, confounders, args))
        print(json.dumps(result))
        return
    result = dict(machine=f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
                  items=args.items, rows=args.rows, d=args.d, repeats=args.repeats,
                  n_repeats=args.n_repeats, clock=args.clock)
    effects, seconds, timed = time_device(df, truth, confounders, args.device, args)
    result.update(timed)
    # the same data on other devices, in this process (e.g. CUDA against CPU)
    result["also"] = [time_device(df, truth, confounders, device, args)[2]
                      for device in filter(None, args.also_devices.split(","))]
    ok = effects[effects["status"] == "ok"]
    if args.econml_items:
        # a spread of item sizes: every k-th item among those estimated
        subset = ok.index[np.linspace(0, len(ok) - 1, args.econml_items).astype(int)]
        runs = [run_econml(df, confounders, subset) for _ in range(args.repeats)]
        theirs, econml_seconds = runs[0][0], min(r[1] for r in runs)
        per_item_ours = seconds / args.items
        per_item_theirs = econml_seconds / len(subset)
        result.update(econml_items=len(subset), econml_seconds=round(econml_seconds, 2),
                      speedup_per_item=round(per_item_theirs / per_item_ours, 1),
                      rmse_subset_ours=round(rmse(ok["ate"].loc[subset], truth), 5),
                      rmse_subset_econml=round(rmse(theirs, truth), 5))
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
