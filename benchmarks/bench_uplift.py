"""Uplift benchmark: fit time of UpliftModel (stage 1 + stage 2) and top-10 scoring time.

    PYTHONPATH=. python benchmarks/bench_uplift.py --rows 200000 --items 200 --users 20000 --score-items 2000

Stage-2 time is reported separately (the CV over the penalty grid and the covariances).
The EconML comparison fits LinearDRLearner per item on the largest few items.
"""
import argparse
import time

import numpy as np
import torch

import causalrec as cr
from causalrec.uplift.score import chunked_top_k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--score-items", type=int, default=2_000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--econml-items", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sim = cr.datasets.simulate_log(n_items=args.items, n_users=50_000, n_rows=args.rows,
                                   effect_heterogeneity=1.0, text_confounding=0.0,
                                   popularity_skew=0.5, seed=0)
    df = sim.data
    extra = [f"x{j}" for j in range(args.d - 3)]
    df = df.assign(**{c: rng.normal(size=len(df)) for c in extra})
    features = ["user_activity", "hour", "tenure"] + extra
    log = cr.InteractionLog(df, item="item_id", treatment="recommended", outcome="clicked",
                            confounders=features)
    t0 = time.perf_counter()
    cr.ItemEffectEstimator(device=args.device).fit(log)  # stage 1, timed
    t1 = time.perf_counter()
    up = cr.UpliftModel(features=features, device=args.device).fit(log)
    t2 = time.perf_counter()
    stage1, total = t1 - t0, t2 - t1
    print(f"fit {args.rows} rows x {args.items} items x d={args.d}: total {total:.2f} s "
          f"(stage 1 alone {stage1:.2f} s, so stage 2 ~{total - stage1:.2f} s); "
          f"shrinkage {up.shrinkage_}")

    # scoring: users x score-items top-10 with random coefficients of the fitted shape
    p = up.coef_matrix_.shape[1]
    X = torch.randn(args.users, p, dtype=torch.float64, device=up.device_)
    W = torch.randn(args.score_items, p, dtype=torch.float64, device=up.device_)
    t0 = time.perf_counter()
    chunked_top_k(X, W, 10)
    t_score = time.perf_counter() - t0
    users = df.iloc[:args.users]
    t0 = time.perf_counter()
    up.recommend(users, k=10)
    t_rec = time.perf_counter() - t0
    print(f"top-10 scoring {args.users} users x {args.score_items} items: {t_score:.2f} s; "
          f"recommend() with intervals, {args.users} users x {args.items} items: {t_rec:.2f} s")

    from econml.dr import LinearDRLearner
    from sklearn.linear_model import LinearRegression, LogisticRegression
    big = df["item_id"].value_counts().index[:args.econml_items]
    t0 = time.perf_counter()
    n_big = 0
    for item in big:
        rows = df[df["item_id"] == item]
        n_big += len(rows)
        LinearDRLearner(model_propensity=LogisticRegression(max_iter=1000),
                        model_regression=LinearRegression(), cv=2, random_state=0).fit(
            rows["clicked"].to_numpy(), rows["recommended"].to_numpy(), X=rows[features].to_numpy())
    t_econ = (time.perf_counter() - t0) / len(big)
    per_item = total / args.items
    print(f"EconML LinearDRLearner: {t_econ:.2f} s per item ({n_big / len(big):.0f} rows each); "
          f"causalrec {per_item * 1000:.1f} ms per item; ratio {t_econ / per_item:.0f}x per item "
          f"(EconML on the largest items, causalrec averaged over all)")


if __name__ == "__main__":
    main()
