"""GLM, boosted and auto nuisances against EconML's LinearDRLearner with HistGradientBoosting
nuisances, run per item in a loop, on the simulator's linear and non-linear logs.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_nuisance.py --items 1000 --rows 1000000 \
        --econml-items 10

Data: ``simulate_log(outcome="continuous", text_confounding=0, popularity_skew=0.3)`` with
and without ``nonlinear=True``; confounders are the numeric and categorical columns. Truth is
each item's mean of the rows' true effects. Prints one JSON object per (data, method);
``--repeats`` keeps each side's fastest run (this VM's speed drifts over minutes). Peak RSS
is the process's peak so far (methods run in the order printed), so only the first row's is
the method's own.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
import warnings

import numpy as np
import pandas as pd

import causalrec as cr


class _Clock:
    """Wall and CPU seconds. With one thread on both sides CPU time is the work done, which
    the shared VM's contention phases (wall time up to 10x) leave nearly unchanged."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self):
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def simulate(n_items, n_rows, nonlinear, seed):
    sim = cr.datasets.simulate_log(n_items=n_items, n_rows=n_rows, outcome="continuous",
                                   text_confounding=0.0, popularity_skew=0.3,
                                   nonlinear=nonlinear, seed=seed)
    roles = dict(sim.roles)
    roles.pop("text")
    return sim, roles


def run_ours(sim, roles, nuisance, threads=1):
    from causalrec.nuisance import BoostedLearner, FlexibleNuisance
    if nuisance in ("boosted", "auto") and threads > 1:
        nuisance = FlexibleNuisance(BoostedLearner(n_threads=threads), auto=nuisance == "auto",
                                    n_jobs=threads)
    clock = _Clock()
    est = cr.ItemEffectEstimator(nuisance=nuisance).fit(cr.InteractionLog(sim.data, **roles))
    seconds = clock.stop()
    models = getattr(est, "nuisance_models_", None)
    own = ({} if models is None else  # items with boosters of their own: candidates, kept
           {m.nuisance: f"{m.n_own_candidates}/{m.n_own_items}" for m in models.itertuples()})
    return est.effects_.set_index("item"), seconds, own


def run_econml(sim, roles, items, threads=1):
    """EconML's LinearDRLearner with HistGradientBoosting nuisances, one item at a time."""
    from threadpoolctl import threadpool_limits
    df = sim.data
    W = pd.get_dummies(df[roles["confounders"] + roles["categorical"]], drop_first=True,
                       dtype=float).to_numpy()
    y, t = df[roles["outcome"]].to_numpy(), df[roles["treatment"]].to_numpy()
    rows = {k: np.flatnonzero(df[roles["item"]].to_numpy() == k) for k in items}
    warnings.simplefilter("ignore")
    clock = _Clock()
    with threadpool_limits(threads):  # HistGradientBoosting's OpenMP threads
        out = {k: _econml_item(y[r], t[r], W[r]) for k, r in rows.items()}
    return pd.DataFrame(out, index=["ate", "ci_low", "ci_high"]).T, clock.stop()


def _econml_item(y, t, W):
    from econml.dr import LinearDRLearner
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    learner = LinearDRLearner(model_propensity=HistGradientBoostingClassifier(random_state=0),
                              model_regression=HistGradientBoostingRegressor(random_state=0),
                              cv=2, min_propensity=0.01, random_state=0)
    learner.fit(y, t, X=None, W=W)
    low, high = learner.ate_interval(alpha=0.05)
    return float(np.ravel(learner.ate())[0]), float(np.ravel(low)[0]), float(np.ravel(high)[0])


def scores(effects, truth):
    m = effects.join(truth, how="inner")
    covered = (m["ci_low"] <= m["true_ate"]) & (m["true_ate"] <= m["ci_high"])
    return (round(float(np.sqrt(((m["ate"] - m["true_ate"]) ** 2).mean())), 4),
            round(float(covered.mean()), 3))


def peak_rss_gb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--econml-items", type=int, default=10)
    parser.add_argument("--data", default="linear,nonlinear")
    parser.add_argument("--methods", default="pooled,boosted,auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--econml-threads", type=int, default=1,
                        help="OpenMP threads of EconML's HistGradientBoosting (ours: --threads)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each side this many times and keep the fastest")
    parser.add_argument("--threads", type=int, default=1,
                        help="XGBoost threads per booster and per-item boosters at once")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)  # CPU time = work only when each side runs one thread

    for data in args.data.split(","):
        sim, roles = simulate(args.items, args.rows, data == "nonlinear", args.seed)
        truth = sim.truth.set_index("item")[["true_ate"]]
        results = {}
        for method in args.methods.split(","):
            runs = [run_ours(sim, roles, method, args.threads) for _ in range(args.repeats)]
            effects, (seconds, cpu) = runs[0][0], min((r[1] for r in runs), key=lambda c: c[1])
            own = runs[0][2]
            ok = effects[effects["status"] == "ok"]
            results[method] = (ok, cpu)
            rmse, coverage = scores(ok, truth)
            print(json.dumps(dict(data=data, method=method, threads=args.threads,
                                  items=args.items, rows=args.rows,
                                  seconds=round(seconds, 2), cpu_seconds=round(cpu, 2),
                                  items_ok=len(ok), rmse=rmse,
                                  coverage=coverage, peak_rss_gb=peak_rss_gb(),
                                  own_candidates_kept=own)), flush=True)
        if args.econml_items:
            ok = next(iter(results.values()))[0]
            subset = ok.index[np.linspace(0, len(ok) - 1, args.econml_items).astype(int)]
            runs = [run_econml(sim, roles, subset, args.econml_threads)
                    for _ in range(args.repeats)]
            theirs, (seconds, cpu) = runs[0][0], min((r[1] for r in runs), key=lambda c: c[1])
            row = dict(data=data, method="econml_hgb_loop", items=len(subset),
                       seconds=round(seconds, 2), cpu_seconds=round(cpu, 2),
                       rmse=scores(theirs, truth)[0],
                       coverage=scores(theirs, truth)[1], peak_rss_gb=peak_rss_gb())
            for method, (effects, own_cpu) in results.items():
                row[f"rmse_subset_{method}"] = scores(effects.loc[subset], truth)[0]
                row[f"cpu_speedup_per_item_{method}"] = round(
                    (cpu / len(subset)) / (own_cpu / args.items), 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
