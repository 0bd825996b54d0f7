"""Own and net effects (issue 25): accuracy against an oracle, and the cost over the item fit.

    .venv/bin/python benchmarks/bench_net.py accuracy [--seeds 6] [--units 30000] [--top 20]
    .venv/bin/python benchmarks/bench_net.py null [--seeds 4] [--units 30000]
    .venv/bin/python benchmarks/bench_net.py speed [--rows 1000000] [--items 1000] [--repeats 3]

accuracy: ``simulate_net_log(n_units, seed)`` (160 items in 16 categories, 8 candidates per
unit, substitutes within a category, complements across a related pair). Per log, our
``NetEffectEstimator`` (defaults) against an oracle AIPW on the same rows that knows the true
propensities and the true outcome regressions given the unit's other candidates and
recommendations (own click and unit total, this row's recommendation set to 0 / 1), its
spillover the difference of the two influence values row by row, normal intervals. Over
items with status "ok", pooled over logs: RMSE of own / net / spillover (ours / oracle),
95% coverage, share of items with clearly negative spillover (true < -0.05) whose interval
lies below 0 (ours / oracle), share of items without spillover (true = 0) whose interval
excludes 0, and the pairwise view (``spillover_pairs(top)``): BH flags at 10%, false
discovery proportion pooled over logs (flags on pairs whose true effect is 0). Also the
spillover without the rest-of-total adjustment (the same AIPW with mu = 0 for the rest).

null: the same logs with ``spillover=False``: share of items whose spillover interval excludes
0 (nominal 5%), |net - own| in units of the net SE.

speed: one process, one thread, both fits on the same log (``simulate_net_log`` with
``items / 10`` categories, units to give ``rows``): ``ItemEffectEstimator().fit`` against
``NetEffectEstimator().fit`` (which runs the item fit inside), best of ``repeats``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from causalrec.datasets.simulate_net import simulate_net_log
from causalrec.estimate import ItemEffectEstimator
from causalrec.estimate.net import NetEffectEstimator
from causalrec.schema import InteractionLog


def _log(sim):
    r = sim.roles
    return InteractionLog(sim.data, item=r["item"], treatment=r["treatment"], outcome=r["outcome"],
                          confounders=r["confounders"])


def unadjusted(est) -> pd.DataFrame:
    """The spillover without the rest-of-total adjustment (mu0 = mu1 = 0 for the rest): what
    the per-item AIPW on the unit total alone would do."""
    from causalrec.estimate.net import score_table
    r, units = est._rows, est._units
    rest = np.bincount(units, weights=r["y"])[units] - r["y"]
    use = r["use"]
    zero = np.zeros(int(use.sum()))
    table = score_table(est.item_estimator_, seg=r["seg"][use], t=r["t"][use], y=rest[use],
                        e=r["e"][use], mu0=zero, mu1=zero, folds=r["folds"][use],
                        n_seg=len(est.effects_))
    return pd.DataFrame({"item": est.effects_["item"], "unadjusted_spillover": table["ate"]})


def accuracy(args):
    rows, pairs = [], []
    for seed in range(args.seeds):
        sim = simulate_net_log(args.units, seed=seed)
        est = NetEffectEstimator().fit(_log(sim), unit="unit")
        m = est.effects_.merge(sim.truth, on="item").merge(sim.oracle(), on="item")
        m = m.merge(unadjusted(est), on="item")
        rows.append(m[m["status"] == "ok"].assign(seed=seed))
        p = est.spillover_pairs(top=args.top).merge(sim.pair_truth, on=["item", "other"])
        pairs.append(p.assign(seed=seed))
        print(f"seed {seed}: {int((m['status'] == 'ok').sum())} items ok", flush=True)
    m, p = pd.concat(rows), pd.concat(pairs)
    z = 1.959964
    for name, ours, low, high, truth in (("own", "own_ate", "own_ci_low", "own_ci_high", "true_own"),
                                         ("net", "net_ate", "net_ci_low", "net_ci_high", "true_net"),
                                         ("spillover", "spillover", "spillover_ci_low",
                                          "spillover_ci_high", "true_spillover")):
        rmse = np.sqrt(((m[ours] - m[truth]) ** 2).mean())
        rmse_o = np.sqrt(((m[f"oracle_{name}"] - m[truth]) ** 2).mean())
        cover = ((m[low] <= m[truth]) & (m[truth] <= m[high])).mean()
        cover_o = (np.abs(m[f"oracle_{name}"] - m[truth]) <= z * m[f"oracle_{name}_se"]).mean()
        print(f"{name:9s} RMSE {rmse:.4f} oracle {rmse_o:.4f} ratio {rmse / rmse_o:.3f}  "
              f"coverage {cover:.3f} (oracle {cover_o:.3f}, n={len(m)})")
    rmse_u = np.sqrt(((m["unadjusted_spillover"] - m["true_spillover"]) ** 2).mean())
    rmse_o = np.sqrt(((m["oracle_spillover"] - m["true_spillover"]) ** 2).mean())
    print(f"spillover without the rest-of-total adjustment: RMSE {rmse_u:.4f}, "
          f"{rmse_u / rmse_o:.3f}x the oracle's")
    negative = m["true_spillover"] < -0.05
    found = (m.loc[negative, "spillover_ci_high"] < 0).mean()
    found_o = (m.loc[negative, "oracle_spillover"] + z * m.loc[negative, "oracle_spillover_se"] < 0).mean()
    print(f"negative spillover (true < -0.05, n={int(negative.sum())}): detected {found:.3f}, "
          f"oracle {found_o:.3f}, ratio {found / found_o:.3f}")
    zero = m["true_spillover"] == 0
    false = ((m.loc[zero, "spillover_ci_high"] < 0) | (m.loc[zero, "spillover_ci_low"] > 0)).mean()
    print(f"no spillover (n={int(zero.sum())}): flagged {false:.3f} (nominal 0.05)")
    flags = p[p["flagged"]]
    fdp = (flags["true_effect"] == 0).sum() / max(len(flags), 1)
    print(f"pairs: {len(p)} tested, {len(flags)} BH flags at 10%, false discovery proportion "
          f"{fdp:.3f}; coverage {((p['ci_low'] <= p['true_effect']) & (p['true_effect'] <= p['ci_high'])).mean():.3f}")


def null(args):
    excl, gap = [], []
    for seed in range(args.seeds):
        sim = simulate_net_log(args.units, seed=seed, spillover=False)
        eff = NetEffectEstimator().fit(_log(sim), unit="unit").effects_
        eff = eff[eff["status"] == "ok"]
        excl.append((eff["spillover_ci_low"] > 0) | (eff["spillover_ci_high"] < 0))
        gap.append((eff["net_ate"] - eff["own_ate"]).abs() / eff["net_se"])
    excl, gap = pd.concat(excl), pd.concat(gap)
    print(f"no spillover simulated: {len(excl)} items, spillover interval excludes 0 for "
          f"{excl.mean():.3f} (nominal 0.05); |net - own| / net_se median {gap.median():.2f}, "
          f"max {gap.max():.2f}")


def speed(args):
    import torch
    torch.set_num_threads(1)
    n_categories = args.items // 10
    n_units = args.rows // 8
    sim = simulate_net_log(n_units, n_categories=n_categories, seed=0)
    log = _log(sim)
    print(f"{len(sim.data)} rows, {sim.data['item'].nunique()} items, {n_units} units")
    best = {"item": np.inf, "net": np.inf}
    for _ in range(args.repeats):  # alternated, so drifting machine load hits both
        t0 = time.perf_counter()
        ItemEffectEstimator().fit(log)
        best["item"] = min(best["item"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        NetEffectEstimator().fit(log, unit="unit")
        best["net"] = min(best["net"], time.perf_counter() - t0)
    print(f"item effects {best['item']:.2f} s, net effects {best['net']:.2f} s, "
          f"ratio {best['net'] / best['item']:.2f} (best of {args.repeats})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["accuracy", "null", "speed"])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--units", type=int, default=30_000)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    {"accuracy": accuracy, "null": null, "speed": speed}[args.mode](args)
