"""How well the cross-fitted nuisance models fit, next to what the item alone predicts.

AIPW is only as good as its nuisances: an outcome model that learns nothing beyond the item's
own click rate leaves the propensity weights to do all the adjusting (large variance), and a
propensity model that learns nothing leaves confounding to the outcome model. The baseline
here is the item-mean model, fitted out of fold on the same folds, so ``improvement`` (one
minus the loss ratio, a pseudo-R^2) says what the confounders add within items.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..nuisance.select import row_loss
from .design import segment_ids

__all__ = ["nuisance_quality"]


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
