"""Interval coverage on small simulated logs, where the small-log refit applies (few units per
design column: ``tunes_shared_penalty``): ``simulate_log`` at a few thousand rows, no text.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_small_sim.py \
        [--logs 20] [--items 20] [--rows 3000] [--options "refit_small_logs=False"]

bench_accuracy.py's logs (100,000-200,000 rows, ~10^5 units) are far above the tuning
threshold (500 units per design column), so the refit never runs there. Over the items with
status "ok" of every log: coverage of the 95% intervals of the true item effects, median
width, sd of (ate - truth) / se, RMSE; and the share of items whose rows the refit covered.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from causalrec import ItemEffectEstimator, InteractionLog
from causalrec.datasets import simulate_log
from causalrec.estimate.nuisance import tunes_shared_penalty


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=int, default=20)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--options", default="")
    args = parser.parse_args()
    options = eval(f"dict({args.options})")
    rows, tuned, start = [], [], time.process_time()
    for seed in range(args.logs):
        sim = simulate_log(n_items=args.items, n_rows=args.rows, seed=seed)
        roles = {k: v for k, v in sim.roles.items() if k != "text"}
        est = ItemEffectEstimator(seed=seed, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(InteractionLog(sim.data, **roles))
        tuned.append(tunes_shared_penalty(int(est.propensity_.notna().sum()),
                                          len(est.design_columns_)))
        eff = est.effects_.reset_index()
        eff = eff[eff.status == "ok"].merge(sim.truth[["item", "true_ate"]],
                                            left_on=eff.columns[0], right_on="item")
        rows.append(eff)
    eff = pd.concat(rows, ignore_index=True)
    err = eff.ate - eff.true_ate
    covered = (eff.ci_low <= eff.true_ate) & (eff.true_ate <= eff.ci_high)
    print(f"logs {args.logs} (tuned: {np.mean(tuned):.2f}), items ok {len(eff)}: "
          f"coverage {covered.mean():.3f}, median width {(eff.ci_high - eff.ci_low).median():.4f}, "
          f"sd(err/se) {np.std(err / eff.se):.3f}, rmse {np.sqrt(np.mean(err ** 2)):.4f}, "
          f"cpu {time.process_time() - start:.0f}s")


if __name__ == "__main__":
    main()
