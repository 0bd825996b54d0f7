"""One small item per call (issue 28): the pooled models' shared-slope ridge is chosen by
out-of-fold loss where rows are few per column, so a few hundred rows and 25 confounders no
longer give a near-unpenalised propensity that collapses the treated arm's weights."""
import warnings

import numpy as np
import pandas as pd

import causalrec as cr
from causalrec.estimate.nuisance import SHARED_PENALTY_GRID, tunes_shared_penalty

N_ROWS, N_COLUMNS, EFFECT = 500, 25, 1.0


def small_log(seed):
    """IHDP-like: 500 rows, 25 confounders (half 0/1), ~20% treated by a logistic policy,
    a linear outcome with a constant effect (so OLS with interactions is correctly specified)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_ROWS, N_COLUMNS))
    X[:, N_COLUMNS // 2:] = (X[:, N_COLUMNS // 2:] > 0.5).astype(float)
    a = np.r_[0.8, -0.6, 0.5, np.zeros(N_COLUMNS - 3)]
    a[N_COLUMNS // 2] = 1.0
    t = (rng.random(N_ROWS) < 1 / (1 + np.exp(1.8 - X @ a))).astype(int)
    y = X @ rng.choice([0.0, 0.5, 1.0], size=N_COLUMNS) + EFFECT * t + rng.standard_normal(N_ROWS)
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(N_COLUMNS)])
    df["item"], df["t"], df["y"] = "a", t, y
    return df


def ols_with_interactions(df):
    X = df.filter(like="x").to_numpy()
    t, y = df["t"].to_numpy(), df["y"].to_numpy()
    Xc = X - X.mean(axis=0)
    design = np.column_stack([np.ones(len(y)), t, Xc, t[:, None] * Xc])
    return np.linalg.lstsq(design, y, rcond=None)[0][1]


def test_one_small_item_close_to_ols_with_interactions_and_far_better_than_naive():
    """20 fixed replications. Measured: RMSE ours / OLS 1.26 with the chosen ridge (grid up to
    64d; 1.27 up to 4d), 1.96 with
    the old near-zero one (0.248 vs 0.126); the naive difference is 4.9x OLS. The bound 1.5 sits
    between the two (it fails on the old code); the estimates of both methods share each
    replication's noise, so their ratio moves far less than each RMSE's own ~16% (1/sqrt(2R))."""
    errors = {"ours": [], "ols": [], "naive": []}
    for seed in range(20):
        df = small_log(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eff = cr.estimate_item_effects(df, "item", "t", "y", confounders=[c for c in df if c.startswith("x")])
        assert eff["status"].iloc[0] == "ok"
        errors["ours"].append(eff["ate"].iloc[0] - EFFECT)
        errors["ols"].append(ols_with_interactions(df) - EFFECT)
        errors["naive"].append(df.y[df.t == 1].mean() - df.y[df.t == 0].mean() - EFFECT)
    rmse = {k: np.sqrt(np.mean(np.square(v))) for k, v in errors.items()}
    assert rmse["ours"] <= 1.5 * rmse["ols"]
    assert rmse["ours"] <= 0.5 * rmse["naive"]


def test_shared_penalty_chosen_only_where_rows_are_few_per_column():
    df = small_log(0)
    roles = dict(item="item", treatment="t", outcome="y",
                 confounders=[c for c in df if c.startswith("x")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = cr.ItemEffectEstimator().fit(cr.InteractionLog(df, **roles))
    grid = {max(c * N_COLUMNS, 1e-4) for c in SHARED_PENALTY_GRID}
    assert set(est.shared_penalty_) == {"propensity", "outcome"}
    assert set(est.shared_penalty_.values()) <= grid
    assert est.shared_penalty_["propensity"] > 1e-4  # this overfitting-prone fit wants a ridge
    assert tunes_shared_penalty(N_ROWS, N_COLUMNS)
    assert not tunes_shared_penalty(1_000_000, 64)
    per_item = cr.ItemEffectEstimator(nuisance="per_item", n_repeats=1).fit(
        cr.InteractionLog(df, **roles))
    assert per_item.shared_penalty_ == {"propensity": 1e-4, "outcome": 1e-4}


def test_each_split_chooses_its_own_penalty():
    """Repeats average single fits (each split's choice is its own): n_repeats=2 equals the
    mean of the seed-0 and seed-1 fits' outcome predictions."""
    df = small_log(1)
    log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                            confounders=[c for c in df if c.startswith("x")])
    fits = [cr.ItemEffectEstimator(dtype="float64", seed=s, n_repeats=1).fit(log) for s in (0, 1)]
    both = cr.ItemEffectEstimator(dtype="float64", seed=0, n_repeats=2).fit(log)
    pd.testing.assert_series_equal(both.mu1_, (fits[0].mu1_ + fits[1].mu1_) / 2, rtol=1e-10)
