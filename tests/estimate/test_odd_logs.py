"""Valid logs shaped unlike the simulator's: coarse designs (no confounders, a few discrete
ones), where many rows of an item-arm are identical."""
import warnings

import numpy as np
import pandas as pd
import pytest

import causalrec as cr
from causalrec.estimate.folds import MAX_COPIES, assign_folds


def ab_log(seed, n_items=6, rows=600, binary=True):
    """A randomised A/B log: 30% treated, no confounders; per-item effects 0 .. 0.1 on a 10%
    click rate (or 0 .. 1 on a normal outcome)."""
    rng = np.random.default_rng(seed)
    item = np.repeat(np.arange(n_items), rows)
    t = (rng.random(len(item)) < 0.3).astype(int)
    tau = np.linspace(0.0, 0.1 if binary else 1.0, n_items)
    if binary:
        y = (rng.random(len(item)) < 0.1 + tau[item] * t).astype(int)
    else:
        y = 1.0 + tau[item] * t + rng.standard_normal(len(item))
    return pd.DataFrame({"item": item, "t": t, "y": y}), tau


def _fit(df, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                                confounders=options.pop("confounders", []),
                                categorical=options.pop("categorical", []))
        return cr.ItemEffectEstimator(**options).fit(log)


@pytest.mark.parametrize("nuisance", ["pooled", "boosted"])
def test_clicks_without_confounders_are_not_all_in_one_fold(nuisance):
    """Was: identical rows share a fold, so an item-arm's non-clicks were dealt as one row
    and its clicks as another: every non-click in one fold, every click in the other. The
    out-of-fold outcome models then predicted 1 for non-clicks and 0 for clicks: every
    effect 0 (1e-18) with SE 0.001, "ok" (coverage 5% over 20 items)."""
    df, tau = ab_log(0)
    est = _fit(df, nuisance=nuisance)
    eff = est.effects_
    assert (eff["status"] == "ok").all()
    # each fold holds both clicks and non-clicks of every item-arm
    cells = pd.crosstab([df["item"], df["t"], df["y"]], est.fold_)
    assert (cells > 0).all().all()
    # no confounders: the normalised AIPW is close to the difference in means, and its SE
    # to the two-sample binomial SE (old: 0.001 against ~0.027)
    assert np.abs(eff["ate"] - eff["naive_ate"]).max() < 0.01
    n_t, n_c = eff["n_treated"], eff["n_control"]
    p_t, p_c = eff["treated_mean"], eff["control_mean"]
    binomial = np.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    assert np.all((eff["se"] / binomial).between(0.8, 1.25))


def test_coarse_design_cells_are_dealt_row_by_row_and_copies_kept():
    """A two-level confounder and 0/1 outcomes: an item-arm has four distinct rows. Its
    cells are split across the folds evenly; a few exact copies of a row with a continuous
    confounder still share one fold."""
    rng = np.random.default_rng(1)
    n = 2000
    df = pd.DataFrame({"item": rng.integers(0, 3, n), "t": rng.integers(0, 2, n),
                       "y": (rng.random(n) < 0.2).astype(int), "x": rng.integers(0, 2, n)})
    args = (df["item"].to_numpy(), df["t"].to_numpy(), df["y"].to_numpy().astype(float))
    folds = assign_folds(df, ["item", "x"], *args, n_folds=2, seed=0, warn_duplicates=False)
    share = pd.Series(folds).groupby([df["item"], df["t"], df["y"], df["x"]]).mean()
    assert share.between(0.4, 0.6).all()  # old: every cell in one fold (share 0 or 1)
    # copies (at most MAX_COPIES of one row) still share their fold
    df["z"] = rng.standard_normal(n)
    copies = pd.concat([df] + [df.iloc[:50]] * (MAX_COPIES - 1), ignore_index=True)
    args = (copies["item"].to_numpy(), copies["t"].to_numpy(), copies["y"].to_numpy().astype(float))
    folds = assign_folds(copies, ["item", "x", "z"], *args, n_folds=2, seed=0,
                         warn_duplicates=False)
    per_row = pd.Series(folds).groupby(np.r_[np.arange(n), np.tile(np.arange(50), MAX_COPIES - 1)])
    assert (per_row.nunique() == 1).all()


def test_continuous_outcome_with_only_a_coarse_categorical_covers():
    """A normal outcome and a three-level categorical confounder of both treatment and
    outcome: every cell of an item-arm lies in both folds, and the estimates are within
    4 SE of the truth (old: each cell in one fold)."""
    rng = np.random.default_rng(2)
    n_items, rows = 4, 900
    item = np.repeat(np.arange(n_items), rows)
    level = rng.integers(0, 3, len(item))
    t = (rng.random(len(item)) < np.array([0.2, 0.5, 0.8])[level]).astype(int)
    tau = np.linspace(0.0, 1.0, n_items)
    y = np.array([0.0, 1.0, 2.0])[level] + tau[item] * t + rng.standard_normal(len(item))
    df = pd.DataFrame({"item": item, "t": t, "y": y, "level": level.astype(str)})
    est = _fit(df, categorical=["level"])
    share = est.fold_.groupby([df["item"], df["t"], df["level"]]).mean()
    assert share.between(0.3, 0.7).all()
    eff = est.effects_
    assert (eff["status"] == "ok").all()
    assert (np.abs(eff["ate"] - tau) < 4 * eff["se"]).all()


def test_a_coarse_log_sorted_by_outcome_or_treatment_gives_the_shuffled_estimates():
    """Cells dealt row by row take their rows in input order among identical rows; those
    rows are interchangeable, so sorting the log changes no estimate."""
    df, _ = ab_log(3, n_items=4, rows=400)
    df["level"] = np.random.default_rng(3).choice(["a", "b"], len(df))
    base = _fit(df.sample(frac=1.0, random_state=0), categorical=["level"]).effects_
    for column in ("y", "t"):
        eff = _fit(df.sort_values(column, kind="stable"), categorical=["level"]).effects_
        np.testing.assert_allclose(eff["ate"], base["ate"], rtol=0, atol=1e-7)
        np.testing.assert_allclose(eff["se"], base["se"], rtol=1e-6)


def test_a_high_cardinality_categorical_confounder_pooled_into_other_warns():
    """A 5,000-level city (Zipf 0.8) confounding exposure and outcome: its levels beyond the
    49 most frequent pool into ``__other__``, 72% of the rows, which the fit cannot tell
    apart (30 items: coverage 0.17, mean z +3.0, every item "ok"). Was silent; now a
    DataWarning names the column, the levels and their share of rows. A categorical whose
    levels are all kept draws none."""
    rng = np.random.default_rng(0)
    n = 20_000
    pop = 1 / np.arange(1, 5001) ** 0.8
    city = rng.choice(5000, n, p=pop / pop.sum())
    df = pd.DataFrame({"item": rng.integers(0, 4, n), "t": rng.integers(0, 2, n),
                       "y": rng.standard_normal(n), "city": "c" + pd.Series(city).astype(str),
                       "device": rng.choice(["ios", "android", "web"], n)})
    log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                            categorical=["city", "device"])
    with pytest.warns(cr.DataWarning, match=r"'city' \(\d{4} levels, [5-9]\d% of rows\)") as record:
        cr.ItemEffectEstimator(n_repeats=1).fit(log)
    assert not any("'device'" in str(w.message) for w in record)
