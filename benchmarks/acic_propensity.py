"""How much of ACIC 2016's confounding each propensity removes, apart from the outcome models.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=.:/tmp/extbench_pkgs \
        python benchmarks/acic_propensity.py

With the true outcome surfaces AIPW is unbiased for any propensity, so it cannot judge one.
Inverse-propensity weighting (Hajek) of the *noise-free* surfaces (each file's mu0, mu1) can:
its error is the propensity's alone. Compared on the 10 files stacked as items (``unit=``):
causalrec's ``boosted`` propensity, per-item logistic regressions and a per-item scikit-learn
HistGradientBoostingClassifier (2-fold, on the same folds), then each propensity in the AIPW
score with causalrec's own outcome models (``mu0_``, ``mu1_``). Data: see bench_external.py.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import causalrec as cr
from bench_external import Z95, _frame, load_acic

CLIP = 0.01


def per_item_propensity(make, X, items, t, folds):
    """Out-of-fold propensities of one model per item, on the given folds."""
    e = np.empty(len(t))
    for k in np.unique(items):
        rows = np.flatnonzero(items == k)
        for f in np.unique(folds[rows]):
            train, test = rows[folds[rows] != f], rows[folds[rows] == f]
            e[test] = make().fit(X[train], t[train]).predict_proba(X[test])[:, 1]
    return e


def scores(e, t, y, items, truth, mu0, mu1, m0, m1):
    """Per item: IPW error on the noise-free surfaces, log loss, AIPW error and SE."""
    rows = []
    for i, k in enumerate(np.unique(items)):
        m = items == k
        ek, tk = np.clip(e[m], CLIP, 1 - CLIP), t[m]
        w1, w0 = tk / ek, (1 - tk) / (1 - ek)
        ipw = np.sum(w1 * mu1[m]) / w1.sum() - np.sum(w0 * mu0[m]) / w0.sum()
        psi = m1[m] - m0[m] + w1 * (y[m] - m1[m]) - w0 * (y[m] - m0[m])
        se = psi.std(ddof=1) / np.sqrt(m.sum())
        rows.append(dict(ipw_error=ipw - truth[i], aipw_error=psi.mean() - truth[i], se=se,
                         log_loss=-np.mean(tk * np.log(ek) + (1 - tk) * np.log1p(-ek))))
    return pd.DataFrame(rows)


def main():
    bench = load_acic(10)
    frame, roles = _frame(bench, list(range(10)))
    log = cr.InteractionLog(frame, **roles, unit="unit")
    est = cr.ItemEffectEstimator(nuisance="boosted")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(log)
    items, t, y = (frame[c].to_numpy() for c in ("item", "t", "y"))
    mu0, mu1 = bench.mu0[:10].ravel(), bench.mu1[:10].ravel()
    m0, m1, folds = est.mu0_.to_numpy(), est.mu1_.to_numpy(), est.fold_.to_numpy()
    X = pd.get_dummies(frame[roles["confounders"] + roles["categorical"]],
                       columns=roles["categorical"], dtype=float).to_numpy(float)
    candidates = {"causalrec boosted": est.propensity_.to_numpy()}
    for c in (0.01, 1.0, 100.0):
        candidates[f"logistic C={c:g}"] = per_item_propensity(
            lambda: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)),
            X, items, t, folds)
    candidates["HistGB"] = per_item_propensity(
        lambda: HistGradientBoostingClassifier(random_state=0), X, items, t, folds)
    naive = np.mean([mu1[items == k][t[items == k] == 1].mean()
                     - mu0[items == k][t[items == k] == 0].mean() - bench.truth[i]
                     for i, k in enumerate(np.unique(items))])
    print(f"difference in means on the noise-free surfaces: mean error {naive:+.3f}")
    for name, e in candidates.items():
        s = scores(e, t, y, items, bench.truth[:10], mu0, mu1, m0, m1)
        covered = int((s.aipw_error.abs() <= Z95 * s.se).sum())
        print(f"{name:20s} IPW error {s.ipw_error.mean():+.3f}  log loss {s.log_loss.mean():.4f}  "
              f"AIPW with causalrec's outcome models: RMSE "
              f"{np.sqrt(np.mean(s.aipw_error ** 2)):.3f}, bias {s.aipw_error.mean():+.3f}, "
              f"covered {covered}/10, median SE {s.se.median():.3f}")


if __name__ == "__main__":
    main()
