"""causalrec against EconML, a causal forest, OLS with interactions and the naive difference on
public semi-synthetic benchmarks with known truth, side by side in one process.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=.:/tmp/extbench_pkgs \
        python benchmarks/bench_external.py [--quick] [--data acic,ihdp_b,ihdp_a]

Benchmarks (loaded from installed packages; nothing is downloaded or committed):
- ``acic``: the ACIC 2016 challenge sample shipped in causallib's wheel (4,802 units, 58 mixed
  covariates, 10 data-generating processes with non-linear surfaces). causallib 0.10 pins
  pandas < 3, so install it apart: ``pip install --no-deps --target /tmp/extbench_pkgs
  causallib==0.10.0``; only its CSV files are read. Truth: mean(mu1 - mu0) of each file.
- ``ihdp_b`` / ``ihdp_a``: the IHDP covariates shipped in EconML (747 units, 25 covariates)
  with Hill's (2011) response surface B (exponential control surface, heterogeneous effect) or
  A (linear, constant effect 4), replication r drawn by ``econml.data.dgps.ihdp_surface_*(r)``.
  Truth: the replication's mean true effect.

Layouts: **stacked** (every replication is an item of one log; a unit recurs in every item;
causalrec is called once, with row-hashed folds and with the ``unit=`` role) and
**per call** (one replication, one item, per call). The per-item competitors see one
replication per call in both layouts. Metrics over replications: RMSE of the ATE (eps_ATE),
coverage of the 95% interval, mean interval width, items whose status is not ``ok``, wall and
CPU seconds (one thread each side; each method is warmed up on one replication first,
so imports are not timed on either side; ``--cold`` times them). The oracle is AIPW with
the true outcome surfaces and a logistic propensity: its intervals are the narrowest an AIPW
with perfect outcome models gets.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

N_FOLDS = 2
Z95 = stats.norm.ppf(0.975)


@dataclass
class Benchmark:
    name: str
    covariates: pd.DataFrame      # one row per unit
    numeric: list
    categorical: list
    t: np.ndarray                 # (replications, units)
    y: np.ndarray
    mu0: np.ndarray
    mu1: np.ndarray

    @property
    def truth(self):
        return (self.mu1 - self.mu0).mean(axis=1)

    def dummies(self) -> np.ndarray:
        """Numeric design for the competitors: categorical columns one-hot (first level
        dropped), every column standardised."""
        X = pd.get_dummies(self.covariates, columns=self.categorical, drop_first=True, dtype=float)
        X = X.to_numpy(float)
        sd = X.std(axis=0)
        return (X[:, sd > 0] - X.mean(axis=0)[sd > 0]) / sd[sd > 0]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"{name} is not importable; see this script's docstring")
    return Path(list(spec.submodule_search_locations)[0])


def load_acic(n_reps: int) -> Benchmark:
    root = _package_dir("causallib") / "datasets" / "data" / "acic_challenge_2016"
    X = pd.read_csv(root / "x.csv")
    categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    numeric = [c for c in X.columns if c not in categorical]
    files = [pd.read_csv(root / f"zymu_{i}.csv") for i in range(1, n_reps + 1)]
    t = np.stack([f["z"].to_numpy(int) for f in files])
    y = np.where(t == 1, np.stack([f["y1"] for f in files]), np.stack([f["y0"] for f in files]))
    return Benchmark("acic", X, numeric, categorical, t, y,
                     np.stack([f["mu0"] for f in files]), np.stack([f["mu1"] for f in files]))


def load_ihdp(surface: str, n_reps: int) -> Benchmark:
    """EconML's draw, with the noise-free surfaces recovered by replaying its random stream
    (beta from ``choice``, then the noise): checked against the linear surface A."""
    from econml.data import dgps
    draw = dgps.ihdp_surface_B if surface == "b" else dgps.ihdp_surface_A
    ts, ys, mu0s, mu1s = [], [], [], []
    for r in range(n_reps):
        Y, T, X, tau = draw(random_state=r)
        rs = np.random.RandomState(r)
        p = [0.6, 0.1, 0.1, 0.1, 0.1] if surface == "b" else [0.5, 0.2, 0.15, 0.1, 0.05]
        beta = rs.choice([0, 1, 2, 3, 4], size=X.shape[1], replace=True, p=p)
        noise = rs.normal(0, 1, size=len(Y))
        mu = Y - noise
        if surface == "a":
            assert np.allclose(mu, X @ beta + 4 * T), "EconML's IHDP draw changed"
        mu1 = np.where(T == 1, mu, mu + tau)
        ts.append(T.astype(int)), ys.append(Y), mu0s.append(mu1 - tau), mu1s.append(mu1)
    names = [f"x{j:02d}" for j in range(X.shape[1] - 1)]  # column 0 is EconML's intercept
    cov = pd.DataFrame(X[:, 1:], columns=names)
    return Benchmark(f"ihdp_{surface}", cov, names, [], np.stack(ts), np.stack(ys),
                     np.stack(mu0s), np.stack(mu1s))


class Clock:
    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self):
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


# ----------------------------------------------------------------- per-replication competitors
def naive(X, t, y, mu0, mu1):
    a, b = y[t == 1], y[t == 0]
    return a.mean() - b.mean(), np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


def ols_interactions(X, t, y, mu0, mu1):
    """y ~ t + X + t * (X - mean X): the coefficient on t is the ATE; HC2 standard error."""
    Xc = X - X.mean(axis=0)
    D = np.column_stack([np.ones(len(y)), t, Xc, t[:, None] * Xc])
    Q, R = np.linalg.qr(D)
    keep = np.abs(np.diag(R)) > 1e-8 * np.abs(np.diag(R)).max()  # drop collinear columns
    D = D[:, keep]
    Q, R = np.linalg.qr(D)
    coef = np.linalg.solve(R, Q.T @ y)
    resid = y - D @ coef
    h = (Q ** 2).sum(axis=1)
    Rinv = np.linalg.inv(R)
    meat = (Q * (resid ** 2 / np.clip(1 - h, 1e-8, None))[:, None]).T @ Q
    cov = Rinv @ meat @ Rinv.T
    return coef[1], np.sqrt(cov[1, 1])


def oracle(X, t, y, mu0, mu1, clip=0.01):
    """AIPW with the true outcome surfaces and an L2 logistic propensity (C=1)."""
    from sklearn.linear_model import LogisticRegression
    e = LogisticRegression(C=1.0, max_iter=2000).fit(X, t).predict_proba(X)[:, 1]
    e = np.clip(e, clip, 1 - clip)
    psi = mu1 - mu0 + t * (y - mu1) / e - (1 - t) * (y - mu0) / (1 - e)
    return psi.mean(), psi.std(ddof=1) / np.sqrt(len(y))


def oracle_conditional(X, t, y, mu0, mu1, clip=0.01):
    """The oracle's estimate with the variance given the covariates (as OLS's, and as
    ``estimand="conditional"``): the effect's spread over the units is no error there."""
    ate, _ = oracle(X, t, y, mu0, mu1, clip)
    from sklearn.linear_model import LogisticRegression
    e = np.clip(LogisticRegression(C=1.0, max_iter=2000).fit(X, t).predict_proba(X)[:, 1],
                clip, 1 - clip)
    residual = t * (y - mu1) / e - (1 - t) * (y - mu0) / (1 - e)
    return ate, residual.std(ddof=1) / np.sqrt(len(y))


def _hgb(kind, seed):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    return (HistGradientBoostingClassifier if kind == "clf" else HistGradientBoostingRegressor)(
        random_state=seed)


def econml_dr(kind):
    def run(X, t, y, mu0, mu1):
        from econml.dr import LinearDRLearner
        from sklearn.linear_model import LinearRegression, LogisticRegression
        if kind == "linear":
            models = dict(model_propensity=LogisticRegression(C=1.0, max_iter=2000),
                          model_regression=LinearRegression())
        else:
            models = dict(model_propensity=_hgb("clf", 0), model_regression=_hgb("reg", 0))
        est = LinearDRLearner(**models, cv=N_FOLDS, min_propensity=0.01, random_state=0)
        est.fit(y, t, X=None, W=X)
        lo, hi = est.ate_interval(alpha=0.05)
        return _from_interval(est.ate(), lo, hi)
    return run


def causal_forest(X, t, y, mu0, mu1):
    from econml.dml import CausalForestDML
    est = CausalForestDML(model_y=_hgb("reg", 0), model_t=_hgb("clf", 0), discrete_treatment=True,
                          cv=N_FOLDS, n_estimators=100, random_state=0)
    est.fit(y, t, X=X)
    lo, hi = est.ate_interval(X, alpha=0.05)
    return _from_interval(est.ate(X), lo, hi)


def _from_interval(ate, lo, hi):
    ate, lo, hi = (float(np.ravel(v)[0]) for v in (ate, lo, hi))
    return ate, (hi - lo) / (2 * Z95)


PER_REPLICATION = {"naive difference": naive, "OLS with interactions": ols_interactions,
                   "oracle AIPW (true outcome surfaces)": oracle,
                   "oracle AIPW, conditional variance": oracle_conditional,
                   "EconML LinearDRLearner, linear nuisances": econml_dr("linear"),
                   "EconML LinearDRLearner, HistGB nuisances": econml_dr("hgb"),
                   "EconML CausalForestDML, HistGB nuisances": causal_forest}


def run_per_replication(bench, fn, reps):
    X = bench.dummies()
    clock, out = Clock(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in reps:
            ate, se = fn(X, bench.t[r], bench.y[r], bench.mu0[r], bench.mu1[r])
            out.append((ate, ate - Z95 * se, ate + Z95 * se, True))
    return np.array(out, dtype=float), clock.stop()


# ----------------------------------------------------------------- causalrec
def _nuisance(name):
    if name == "HistGB (nuisance=)":
        return (_hgb("clf", 0), _hgb("reg", 0))
    return name


def _causalrec(frame, roles, nuisance):
    """``nuisance``: a ``nuisance=`` label, "+ conditional" asks ``estimand="conditional"``."""
    import causalrec as cr
    nuisance, _, estimand = nuisance.partition(" + ")
    est = cr.ItemEffectEstimator(nuisance=_nuisance(nuisance), n_folds=N_FOLDS,
                                 estimand=estimand or "population")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(cr.InteractionLog(frame, **roles))
    eff = est.effects_
    return eff[["ate", "ci_low", "ci_high"]].to_numpy(float), (eff["status"] == "ok").to_numpy()


def _frame(bench, reps):
    """The stacked log: replication r is item "r###"; ``unit`` is the unit's row number."""
    n = len(bench.covariates)
    frame = pd.concat([bench.covariates] * len(reps), ignore_index=True)
    frame["item"] = np.repeat([f"r{r:03d}" for r in reps], n)
    frame["unit"] = np.tile(np.arange(n), len(reps))
    frame["t"] = bench.t[reps].ravel()
    frame["y"] = bench.y[reps].ravel()
    roles = dict(item="item", treatment="t", outcome="y", confounders=bench.numeric,
                 categorical=bench.categorical or None)
    return frame, roles


def run_causalrec_stacked(bench, nuisance, reps, grouped):
    """One call on the stacked log; ``grouped``: with the ``unit`` role (folds, early
    stopping and the shared slopes' penalty all see units, not rows)."""
    frame, roles = _frame(bench, reps)
    if grouped:
        roles["unit"] = "unit"
    clock = Clock()
    est, ok = _causalrec(frame, roles, nuisance)
    return np.column_stack([est, ok]), clock.stop()


def run_causalrec_per_call(bench, nuisance, reps):
    frames = [_frame(bench, [r]) for r in reps]
    clock, out = Clock(), []
    for frame, roles in frames:
        est, ok = _causalrec(frame, roles, nuisance)
        out.append(np.append(est[0], ok[0]))
    return np.array(out), clock.stop()


# ----------------------------------------------------------------- report
def summarise(bench, reps, results, seconds):
    truth = bench.truth[reps]
    ate, lo, hi, ok = results.T
    ok = ok.astype(bool)
    fin = np.isfinite(ate)
    err = ate[fin] - truth[fin]
    cover = (lo <= truth) & (truth <= hi)
    return dict(rmse=float(np.sqrt(np.mean(err ** 2))) if fin.any() else float("nan"),
                bias=float(err.mean()) if fin.any() else float("nan"),
                coverage=float(cover[fin].mean()) if fin.any() else float("nan"),
                width=float(np.median((hi - lo)[fin])) if fin.any() else float("nan"),
                not_ok=int((~ok | ~fin).sum()), n=len(reps),
                wall_s=round(seconds[0], 2), cpu_s=round(seconds[1], 2))


CAUSALREC = ("pooled", "per_item", "boosted", "auto", "factorised", "HistGB (nuisance=)",
             *(f"{mode} + conditional" for mode in ("pooled", "per_item", "boosted", "auto",
                                                     "factorised", "HistGB (nuisance=)")))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="acic,ihdp_b,ihdp_a")
    parser.add_argument("--reps", type=int, default=None,
                        help="replications per benchmark (default: all; acic has 10, ihdp 100)")
    parser.add_argument("--quick", action="store_true",
                        help="3 ACIC files, 20 IHDP replications, no causal forest")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of method names (substring match; "
                             "separate by '|' instead where a name holds a comma, e.g. "
                             "'LinearDRLearner, HistGB|causalrec boosted')")
    parser.add_argument("--layouts", default=None,
                        help="comma-separated subset of causalrec's layouts (substring match: "
                             "'row', 'unit', 'per call')")
    parser.add_argument("--cold", action="store_true",
                        help="time each method's first call too (imports, e.g. XGBoost's "
                             "~0.1-0.7 s; by default each method runs once on one "
                             "replication, untimed, before it is timed)")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for name in args.data.split(","):
        if name == "acic":
            bench = load_acic(args.reps or (3 if args.quick else 10))
        else:
            bench = load_ihdp(name[-1], args.reps or (20 if args.quick else 100))
        reps = list(range(len(bench.t)))
        wanted = lambda m: args.methods is None or any(
            s in m for s in args.methods.split("|" if "|" in args.methods else ","))
        rows = []
        for method, fn in PER_REPLICATION.items():
            if (args.quick and "Forest" in method) or not wanted(method):
                continue
            if not args.cold:  # imports and first-call set-up outside the clock
                run_per_replication(bench, fn, reps[:1])
            res, sec = run_per_replication(bench, fn, reps)
            rows.append(dict(layout="per replication", method=method, **summarise(bench, reps, res, sec)))
        for nuisance in CAUSALREC:
            # the conditional-variance runs only when asked for by name ("conditional")
            if not wanted(f"causalrec {nuisance}") or (
                    "conditional" in nuisance and "conditional" not in (args.methods or "")):
                continue
            runs = {"stacked, row folds": lambda: run_causalrec_stacked(bench, nuisance, reps, False),
                    "stacked, unit=": lambda: run_causalrec_stacked(bench, nuisance, reps, True),
                    "per call": lambda: run_causalrec_per_call(bench, nuisance, reps)}
            for layout, run in runs.items():
                if args.layouts and not any(k in layout for k in args.layouts.split(",")):
                    continue
                try:
                    if not args.cold:  # e.g. XGBoost's import, on one replication
                        run_causalrec_per_call(bench, nuisance, reps[:1])
                    rows.append(dict(layout=layout, method=f"causalrec {nuisance}",
                                     **summarise(bench, reps, *run())))
                except Exception as exc:  # a crash is a result too (e.g. factorised, few items)
                    rows.append(dict(layout=layout, method=f"causalrec {nuisance}",
                                     error=f"{type(exc).__name__}: {exc}"[:200]))
        for row in rows:
            print(json.dumps(dict(data=bench.name, units=len(bench.covariates), **row)), flush=True)


if __name__ == "__main__":
    main()
