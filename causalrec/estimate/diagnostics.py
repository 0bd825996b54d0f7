"""How well the cross-fitted nuisance models fit, next to what the item alone predicts, and
how well the fitted propensities balance the confounders.

AIPW is only as good as its nuisances: an outcome model that learns nothing beyond the item's
own click rate leaves the propensity weights to do all the adjusting (large variance), and a
propensity model that learns nothing leaves confounding to the outcome model. The baseline
here is the item-mean model, fitted out of fold on the same folds, so ``improvement`` (one
minus the loss ratio, a pseudo-R^2) says what the confounders add within items.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from scipy import stats

from ..nuisance.select import row_loss
from .design import segment_ids
from .missing_values import indicator_name

__all__ = ["nuisance_quality", "covariate_balance", "balance_overview", "balance_verdict"]

# |standardised mean difference| below which a confounder counts as balanced (Austin 2009)
SMD_BALANCED = 0.1


def nuisance_quality(estimator) -> pd.DataFrame:
    """Out-of-fold fit of a fitted ``ItemEffectEstimator``'s nuisance models.

    One row per model (propensity, outcome without / with the recommendation): rows scored,
    the mean out-of-fold loss (log loss for 0/1 targets, squared error otherwise), the same
    loss of the out-of-fold item means (``baseline_loss``) and ``improvement`` = 1 - loss /
    baseline_loss. A logged propensity is not fitted and gets no row. With repeated splits
    the predictions are averaged over the splits, and so is the baseline (each split's
    out-of-fold item means): averaging alone must not count as an improvement.
    """
    estimator._check_fitted()
    log = estimator.log_
    df = log.data
    used = estimator.propensity_.notna().to_numpy()
    item, _ = segment_ids(df, list(estimator.segments_.columns))
    t = df[log.treatment].to_numpy(dtype=np.float64)
    y = df[log.outcome].to_numpy(dtype=np.float64)
    splits = getattr(estimator, "split_folds_", None) or [estimator.fold_.to_numpy()[used]]
    binary = estimator.outcome_family_ == "logistic"
    models = [("outcome, not recommended", y, estimator.mu0_, t == 0, binary),
              ("outcome, recommended", y, estimator.mu1_, t == 1, binary)]
    if log.propensity is None:
        models.insert(0, ("propensity", t, estimator.propensity_, np.ones(len(t), bool), True))
    rows = []
    for name, target, pred, arm, logistic in models:
        keep = used & arm
        pred = pred.to_numpy(dtype=np.float64)[keep]
        base = np.mean([_out_of_fold_item_mean(target[keep], item[keep], folds[arm[used]])
                        for folds in splits], axis=0)
        family = "logistic" if logistic else "gaussian"
        loss, base_loss = (float(row_loss(p, target[keep], family).mean()) if keep.any()
                           else np.nan for p in (pred, base))
        rows.append(dict(model=name, rows=int(keep.sum()),
                         loss="log loss" if logistic else "squared error",
                         value=loss, baseline_value=base_loss,
                         improvement=1.0 - loss / base_loss if base_loss > 0 else np.nan))
    return pd.DataFrame(rows)


def _out_of_fold_item_mean(target, item, folds):
    """Each row's item mean over the other folds' rows (the other folds' overall mean where
    its item has none there; the row's own fold when there is only one fold)."""
    n_items = int(item.max()) + 1 if len(item) else 0
    total = np.bincount(item, weights=target, minlength=n_items)
    count = np.bincount(item, minlength=n_items).astype(np.float64)
    out = np.empty(len(target))
    fold_ids = np.unique(folds)
    for f in fold_ids:
        test = folds == f
        if len(fold_ids) > 1:
            s = total - np.bincount(item[test], weights=target[test], minlength=n_items)
            c = count - np.bincount(item[test], minlength=n_items)
            overall = (target.sum() - target[test].sum()) / max(c.sum(), 1.0)
        else:
            s, c, overall = total, count, target.mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(c > 0, s / c, overall)
        out[test] = mean[item[test]]
    return out


def covariate_balance(estimator) -> pd.DataFrame:
    """Standardised mean differences (SMD) of the confounders between the arms of every item,
    before and after inverse-propensity weighting with the fitted propensities.

    One row per item (with its ``status``) and column: each numeric confounder, and each
    level of each categorical one as a 0/1 column ``"name=level"``, as the design reads them
    (a missing numeric value filled, its indicator ``"name=__missing__"`` a column of its
    own, where the log's ``missing="indicator"``; text components are
    balanced by the balancing step, ``balance_penalty``, and not listed). ``smd_unweighted``
    is (treated mean - control mean) over the pooled within-arm SD; ``smd_weighted`` the same difference with each arm weighted
    to the item's population (1 / e on treated rows, 1 / (1 - e) on control rows, the clipped
    propensities of ``propensity_``, trimmed rows left out), over the same SD, so the two are
    comparable. ``smd_noise`` = sqrt(1 / ess_treated + 1 / ess_control) (Kish effective sizes
    of the weights) is the SD the weighted SMD would have by chance with balanced arms: on
    small items an SMD of 0.1 is noise. NaN where an arm is empty; inf where a column
    separates the arms exactly (no within-arm spread, different means). A well-fitted
    propensity leaves ``smd_weighted`` near 0 for every column; weighting balances only what
    the propensity model saw, so the AIPW outcome models must do the rest.
    """
    estimator._check_fitted()
    log, df = estimator.log_, estimator.log_.data
    keys = list(estimator.segments_.columns)
    item, segments = segment_ids(df, keys)
    n_items = len(segments)
    e = estimator.propensity_.to_numpy(dtype=np.float64)
    used = np.isfinite(e)
    t = df[log.treatment].to_numpy(dtype=np.float64)
    trim = getattr(estimator, "trim", None)
    kept = used if trim is None else used & (e >= trim) & (e <= 1 - trim)
    e = np.where(used, e, 0.5)
    arms = [(used & (t == a), (kept & (t == a)) / (e if a == 1 else 1 - e)) for a in (1, 0)]
    count = lambda w: np.bincount(item, weights=w.astype(np.float64), minlength=n_items)
    sizes = [(count(m), count(w), count(w ** 2)) for m, w in arms]
    with np.errstate(divide="ignore", invalid="ignore"):
        noise = np.sqrt(sum(w2 / w ** 2 for _, w, w2 in sizes))

    def per_arm(total, spread):  # (arm, item, column): plain mean, weighted mean, plain spread
        out = []
        for (member, weight), (n, w, _) in zip(arms, sizes):
            with np.errstate(divide="ignore", invalid="ignore"):
                plain = total(member) / n[:, None]
                out.append((plain, total(weight) / w[:, None], spread(member, plain, n)))
        return [np.stack(v) for v in zip(*out)]

    parts = []
    spec = estimator.design_spec_

    def numeric():  # as the design reads them, one alive at a time: missing values filled,
        for name in log.confounders:  # each indicator a column (the log's missing="indicator")
            yield name, np.asarray(spec.numeric(df[name], name), dtype=np.float64)
        for name in spec.indicators:
            yield indicator_name(name), spec.is_missing(df[name]).astype(np.float64)

    for name, x in numeric():
        x = x - x[used].mean() if used.any() else x  # centred: sums of squares lose less
        spread = lambda member, plain, n: (count(member * (x - plain[item, 0]) ** 2)
                                           / n)[:, None]
        parts.append(([name], float(np.abs(x[used]).max(initial=0.0)),
                      *per_arm(lambda w: count(w * x)[:, None], spread)))
    for name in log.categorical:  # each level a 0/1 column: one count per (item, level)
        codes, levels = pd.factorize(df[name], sort=True, use_na_sentinel=False)
        cell = item * len(levels) + codes
        by_cell = lambda w: np.bincount(cell, weights=w.astype(np.float64),
                                        minlength=n_items * len(levels)).reshape(n_items, -1)
        parts.append(([f"{name}={level}" for level in levels], 1.0,
                      *per_arm(by_cell, lambda member, share, n: share * (1 - share))))
    rows = []
    for names, scale, plain, weighted, spread in parts:  # (arm, item, column) arrays
        sd = np.sqrt(spread.mean(axis=0))
        before, after = (_standardised(m[0] - m[1], sd, 1e-12 * scale) for m in (plain, weighted))
        for j, name in enumerate(names):
            rows.append(pd.DataFrame({"column": name, "smd_unweighted": before[:, j],
                                      "smd_weighted": after[:, j], "smd_noise": noise}))
    if not rows:
        return pd.DataFrame(columns=["item", *keys[1:], "status", "column", "smd_unweighted",
                                     "smd_weighted", "smd_noise"])
    key_table = estimator.effects_[estimator._keys() + ["status"]].reset_index(drop=True)
    return pd.concat([pd.concat([key_table, part], axis=1) for part in rows], ignore_index=True)


def _standardised(gap, sd, rounding):
    """gap / sd; where the column has no spread within the arms (up to ``rounding``, the
    column's rounding level): 0 if the arms agree, else +-inf (the column separates them)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > rounding, gap / sd,
                        np.where(np.abs(gap) > rounding, np.sign(gap) * np.inf, 0.0))


def balance_verdict(estimator) -> dict | None:
    """The weighted balance of the ``ok`` items, as the summary and the report state it:
    ``balance`` (their ``covariate_balance`` rows with a chance SD), its ``overview``
    (``balance_overview`` at the estimator's alpha) and ``off``, the pairs off balance
    beyond chance; None where no pair was measured."""
    balance = estimator.covariate_balance()
    balance = balance[(balance["status"] == "ok") & np.isfinite(balance["smd_noise"])]
    if not len(balance):
        return None
    overview = balance_overview(balance, estimator.alpha)
    return dict(balance=balance, overview=overview, off=int(overview["items_imbalanced"].sum()))


def balance_overview(balance: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per column of ``covariate_balance``: items measured, median and largest |SMD| before
    and after weighting, and ``items_imbalanced``: items whose weighted |SMD| is above
    ``SMD_BALANCED`` (0.1) and beyond chance, |SMD| / smd_noise above the normal quantile
    with a Bonferroni correction over every (item, column) pair at ``alpha``."""
    b = balance[np.isfinite(balance["smd_noise"])]
    z = stats.norm.ppf(1 - alpha / (2 * max(len(b), 1)))
    weighted = b["smd_weighted"].abs()
    off = (weighted > SMD_BALANCED) & (weighted > z * b["smd_noise"])
    grouped = b.assign(abs_before=b["smd_unweighted"].abs(), abs_after=weighted,
                       off=off).groupby("column", sort=False)
    return pd.DataFrame({"items": grouped.size(),
                         "median_abs_smd_unweighted": grouped["abs_before"].median(),
                         "median_abs_smd_weighted": grouped["abs_after"].median(),
                         "max_abs_smd_weighted": grouped["abs_after"].max(),
                         "items_imbalanced": grouped["off"].sum()}).reset_index()
