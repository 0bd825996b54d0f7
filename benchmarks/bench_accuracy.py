"""Accuracy on simulated logs with known truth: ranking priors and interval calibration.

    .venv/bin/python benchmarks/bench_accuracy.py rank [--seeds 6]
    .venv/bin/python benchmarks/bench_accuracy.py intervals [--logs 5] [--nuisance pooled]
        [--n-folds 2] [--n-repeats auto] [--no-text --text-confounding 0] [--seed-offset 0]
        [--placebo-draws 1]
    .venv/bin/python benchmarks/bench_accuracy.py bias [--logs 3] [--nuisance pooled,factorised,auto]
        [--item-text] [--text-confounding 1] [--seed-offset 0]
        (a nuisance "factorised:base=own:factor_prior=atoms" sets FactorisedLearner options)

rank: ``simulate_log(n_items=1000, n_rows=200_000, text_confounding=0, popularity_skew=0.7,
effect_features=1 and 0)``; items with status "ok" from ``estimate_item_effects``; then the
estimates either as estimated ("estimator") or redrawn around the true effects with the
estimator's SEs ("honest SEs": isolates the prior from the SEs' calibration). Per prior: RMSE
of posterior means, precision@20 (share of the true top 20 among the ranked top 20) and the
coverage of the 95% posterior intervals, averaged over seeds.

intervals: heavy-tailed (Zipf 0.7), text-confounded logs (``simulate_log`` defaults for the
confounding, ``text=["user_text"]``), 1000 items, 200,000 rows each. Over the items with
status "ok": coverage of the 95% intervals of the true item effects, next to an oracle AIPW
on the same rows (true propensities and outcome functions; normal and t intervals); z-score spread
by item size; placebo: treatment permuted within item, share of items significant at 5%
(``--placebo-draws`` permutations per log). ``--no-text`` drops the text role; with
``--text-confounding 0`` the log has no text confounding either (the "no text" logs of
benchmarks/README.md); without it the topic is an omitted confounder.

bias: the long tail under text confounding (issue 14): ``simulate_log(n_items=400,
n_rows=100_000, popularity_skew=0.8)`` (54-8,100 rows per item, ~90% of items under 500),
exposure and clicks confounded through the match of the user's profile topic (seen only
through ``user_text``) and the item's topic; ``text=["user_text"]`` (``--item-text`` adds
``item_text``). Per nuisance, over the items with status "ok" under every nuisance compared:
the share of the naive (difference in means) mean bias removed, 1 - mean(ate - true) /
mean(naive - true), overall and per item-size band, with the SE of the mean error over
items; the oracle AIPW's share on the same items (noise: its expectation is 1) and the share
measured against it, 1 - mean(ate - oracle) / mean(naive - true) (same expectation, a smaller
SE: the logs' noise is shared); RMSE over the oracle AIPW's; 95% coverage.
"""
from __future__ import annotations

import argparse
import ast
import time

import numpy as np
import pandas as pd
from scipy import stats

from causalrec.datasets import simulate_log
from causalrec.estimate import estimate_item_effects
from causalrec.nuisance import FactorisedLearner, FlexibleNuisance
from causalrec.rank import rank_items


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def precision_at(k, theta, score) -> float:
    return len(set(np.argsort(-theta)[:k]) & set(np.argsort(-np.asarray(score))[:k])) / k


def bench_rank(seeds: int) -> pd.DataFrame:
    rows = []
    for features in (1.0, 0.0):
        for seed in range(seeds):
            sim = simulate_log(n_items=1000, n_rows=200_000, text_confounding=0.0,
                               popularity_skew=0.7, effect_features=features, seed=seed)
            eff = estimate_item_effects(sim.data, **{**sim.roles, "text": None})
            eff = eff[eff.status == "ok"].reset_index(drop=True)
            theta = sim.truth.set_index("item").true_ate.loc[eff.item].to_numpy()
            noise = np.random.default_rng(1000 + seed).standard_normal(len(eff))
            honest = eff.assign(ate=theta + eff.se * noise)
            for data, table in (("estimator", eff), ("honest SEs", honest)):
                priors = {
                    "raw estimates": None, "normal": {}, "npmle": {"prior": "npmle"},
                    "covariates, normal (robust intervals)": {"covariates": sim.item_features},
                    "covariates, normal (posterior intervals)": {
                        "covariates": sim.item_features, "interval": "posterior"},
                    "covariates, npmle": {"covariates": sim.item_features, "prior": "npmle"},
                }
                for name, kwargs in priors.items():
                    if kwargs is None:
                        mean, half = table.ate, 1.959964 * table.se
                        low, high = mean - half, mean + half
                    else:
                        ranked = rank_items(table, n_draws=10, **kwargs).set_index("item")
                        ranked = ranked.loc[table.item]
                        mean, low, high = (ranked.posterior_mean, ranked.posterior_low,
                                           ranked.posterior_high)
                    rows.append(dict(effect_features=features, data=data, prior=name,
                                     items=len(table), rmse=rmse(mean, theta),
                                     p20=precision_at(20, theta, mean),
                                     coverage=np.mean((low <= theta) & (theta <= high))))
    out = pd.DataFrame(rows)
    return (out.groupby(["effect_features", "data", "prior"], sort=False)
            .agg(items=("items", "sum"), rmse=("rmse", "mean"), p20=("p20", "mean"),
                 coverage=("coverage", "mean"), cov_min=("coverage", "min"),
                 cov_max=("coverage", "max")).round(4))


def oracle_aipw(sim) -> pd.DataFrame:
    """Per-item AIPW with the true propensities and outcome functions."""
    d, truth = sim.data, sim.row_truth
    t, y = d["recommended"].to_numpy(float), d[sim.roles["outcome"]].to_numpy(float)
    e, mu0, mu1 = (truth[c].to_numpy() for c in ("propensity", "mu0", "mu1"))
    psi = mu1 - mu0 + t * (y - mu1) / e - (1 - t) * (y - mu0) / (1 - e)
    g = pd.DataFrame({"item": d["item_id"].to_numpy(), "psi": psi}).groupby("item").psi
    return pd.DataFrame({"oracle_ate": g.mean(), "oracle_se": g.std() / np.sqrt(g.size())})


def bench_intervals(logs: int, nuisance: str, n_folds: int, n_repeats: int, text: bool,
                    seed_offset: int = 0, placebo_draws: int = 1, text_confounding: float = 1.0):
    rows, placebo = [], []
    for seed in range(seed_offset, seed_offset + logs):
        sim = simulate_log(n_items=1000, n_rows=200_000, popularity_skew=0.7, seed=100 + seed,
                           text_confounding=text_confounding)
        roles = {**sim.roles, **({} if text else {"text": None})}
        kwargs = dict(nuisance=nuisance, n_folds=n_folds, n_repeats=n_repeats, seed=seed)
        start = time.perf_counter()
        eff = estimate_item_effects(sim.data, **roles, **kwargs)
        elapsed = time.perf_counter() - start
        eff = eff[eff.status == "ok"].merge(sim.truth[["item", "true_ate"]], on="item")
        eff = eff.join(oracle_aipw(sim), on="item")
        eff["seed"], eff["seconds"] = seed, elapsed
        rows.append(eff)
        rng = np.random.default_rng(seed)
        significant = []  # several permutations per log: its own placebo rate, not one draw's
        for _ in range(placebo_draws):
            permuted = sim.data.assign(recommended=sim.data.groupby("item_id").recommended
                                       .transform(lambda s: rng.permutation(s.to_numpy())))
            null = estimate_item_effects(permuted, **roles, **kwargs)
            significant.append(null.p_value[null.status == "ok"].to_numpy() < 0.05)
        placebo.append(float(np.mean(np.concatenate(significant))))
    eff = pd.concat(rows, ignore_index=True)
    eff["covered"] = (eff.ci_low <= eff.true_ate) & (eff.true_ate <= eff.ci_high)
    eff["oracle_covered"] = np.abs(eff.oracle_ate - eff.true_ate) <= 1.959964 * eff.oracle_se
    # the oracle with t at the smaller arm's rows - 1 (tiny binary items: normal is too short)
    oracle_t = stats.t.ppf(0.975, np.maximum(np.minimum(eff.n_treated, eff.n_control) - 1, 1))
    eff["oracle_t_covered"] = np.abs(eff.oracle_ate - eff.true_ate) <= oracle_t * eff.oracle_se
    eff["z"] = (eff.ate - eff.true_ate) / eff.se
    per_log = eff.groupby("seed").agg(items=("item", "size"), coverage=("covered", "mean"),
                                      oracle=("oracle_covered", "mean"),
                                      oracle_t=("oracle_t_covered", "mean"),
                                      rmse=("ate", lambda a: rmse(a, eff.true_ate[a.index])),
                                      oracle_rmse=("oracle_ate", lambda a: rmse(
                                          a, eff.true_ate[a.index])),
                                      seconds=("seconds", "first"))
    per_log["placebo"] = placebo
    by_size = eff.groupby(pd.cut(eff.n, [0, 150, 300, 600, 1500, np.inf])).agg(
        items=("item", "size"), coverage=("covered", "mean"), oracle=("oracle_covered", "mean"),
        z_sd=("z", "std"), se_ratio=("se", "mean"), oracle_se=("oracle_se", "mean"),
        bias=("z", "mean"))
    by_size["se_ratio"] = by_size.se_ratio / by_size.oracle_se
    return per_log.round(4), by_size.drop(columns="oracle_se").round(3)


def nuisance_value(name: str):
    """The estimator's ``nuisance`` for a benchmark label: "factorised:KEY=VALUE:..." builds
    ``FlexibleNuisance(learner=FactorisedLearner(KEY=VALUE, ...))``; other labels as given."""
    kind, *options = name.split(":")
    if kind != "factorised" or not options:
        return name
    settings = {}
    for option in options:
        key, value = option.split("=", 1)
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            settings[key] = value
    return FlexibleNuisance(learner=FactorisedLearner(**settings))


def bench_bias(logs: int, nuisances: list[str], item_text: bool, text_confounding: float,
               seed_offset: int = 0):
    text = ["user_text", "item_text"] if item_text else ["user_text"]
    rows = []
    for seed in range(seed_offset, seed_offset + logs):
        sim = simulate_log(n_items=400, n_rows=100_000, popularity_skew=0.8,
                           text_confounding=text_confounding, seed=300 + seed)
        d, y = sim.data, sim.roles["outcome"]
        arm = d.groupby(["item_id", "recommended"])[y].mean().unstack()
        naive = arm[1] - arm[0]
        tables = {}
        for nuisance in nuisances:
            start = time.perf_counter()
            eff = estimate_item_effects(d, **{**sim.roles, "text": text},
                                        nuisance=nuisance_value(nuisance), seed=seed)
            tables[nuisance] = eff.set_index("item").assign(
                seconds=time.perf_counter() - start)
        ok = np.logical_and.reduce([t.status.eq("ok").to_numpy() for t in tables.values()])
        items = tables[nuisances[0]].index[ok]
        true = sim.truth.set_index("item").true_ate.loc[items]
        oracle = oracle_aipw(sim).oracle_ate.loc[items]
        for nuisance, table in tables.items():
            t = table.loc[items]
            rows.append(pd.DataFrame({
                "nuisance": nuisance, "seed": seed, "n": t.n, "error": t.ate - true,
                "naive_error": naive.loc[items] - true, "oracle_error": oracle - true,
                "covered": (t.ci_low <= true) & (true <= t.ci_high), "seconds": t.seconds}))
    eff = pd.concat(rows)

    def summary(g):
        # the oracle's error on the same rows is noise with mean 0 shared with every
        # estimator: subtracting it (a control variate) keeps the expected share and cuts its SE
        paired = g.error - g.oracle_error
        return pd.Series({
            "items": len(g), "removed": 1 - g.error.mean() / g.naive_error.mean(),
            "removed_se": g.error.std() / np.sqrt(len(g)) / abs(g.naive_error.mean()),
            "oracle_removed": 1 - g.oracle_error.mean() / g.naive_error.mean(),
            "removed_vs_oracle": 1 - paired.mean() / g.naive_error.mean(),
            "vs_oracle_se": paired.std() / np.sqrt(len(g)) / abs(g.naive_error.mean()),
            "rmse_ratio": np.sqrt((g.error ** 2).mean() / (g.oracle_error ** 2).mean()),
            "coverage": g.covered.mean(), "seconds": g.groupby("seed").seconds.first().mean()})

    overall = eff.groupby("nuisance", sort=False)[list(eff.columns[1:])].apply(summary)
    bands = pd.cut(eff.n, [0, 150, 300, 500, 2000, np.inf])
    by_size = eff.groupby(["nuisance", bands], sort=False, observed=True)[
        list(eff.columns[1:])].apply(summary).drop(columns="seconds")
    return overall.round(3), by_size.round(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["rank", "intervals", "bias"])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--logs", type=int, default=5)
    parser.add_argument("--nuisance", default="pooled")
    parser.add_argument("--n-folds", type=int, default=2)
    parser.add_argument("--n-repeats", type=lambda v: v if v == "auto" else int(v), default="auto")
    parser.add_argument("--no-text", action="store_true")
    parser.add_argument("--item-text", action="store_true")
    parser.add_argument("--text-confounding", type=float, default=1.0)
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="the first log's seed is 300 (bias) or 100 (intervals) + this")
    parser.add_argument("--placebo-draws", type=int, default=1,
                        help="intervals: permutations of the treatment per log")
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    if args.part == "bias":
        overall, by_size = bench_bias(args.logs, args.nuisance.split(","), args.item_text,
                                      args.text_confounding, args.seed_offset)
        print(overall.to_string())
        print(by_size.to_string())
        return
    if args.part == "rank":
        print(bench_rank(args.seeds).to_string())
        return
    per_log, by_size = bench_intervals(args.logs, args.nuisance, args.n_folds, args.n_repeats,
                                       not args.no_text, args.seed_offset, args.placebo_draws,
                                       args.text_confounding)
    print(per_log.to_string())
    total = per_log["items"].sum()
    mean = lambda c: float(np.average(per_log[c], weights=per_log["items"]))  # noqa: E731
    print(f"all {total} items: coverage {mean('coverage'):.4f} (oracle {mean('oracle'):.4f}, "
          f"with t {mean('oracle_t'):.4f}), "
          f"RMSE ratio {np.mean(per_log.rmse / per_log.oracle_rmse):.3f}, "
          f"placebo {per_log.placebo.min():.3f}-{per_log.placebo.max():.3f}")
    print(by_size.to_string())


if __name__ == "__main__":
    main()
