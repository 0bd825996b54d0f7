"""Function forms of ``BanditEstimator``: item values and a policy's value in one call."""
from __future__ import annotations

import pandas as pd

from .estimator import BanditEstimator

__all__ = ["estimate_item_values", "estimate_policy_value"]


def estimate_item_values(df: pd.DataFrame, item: str, outcome: str, propensity: str,
                         position: str | None = None, confounders=None, method: str = "dr",
                         by_position: bool = False, items=None, **options) -> pd.DataFrame:
    """Value of showing each item, from a bandit log with logged propensities.

    Parameters
    ----------
    df : the log, one row per impression (the item shown, in a position).
    item, outcome, propensity : column names; ``propensity`` is the probability the logging
        policy gave the shown item (in its position), as logged.
    position : optional position column: it enters the outcome model and ``by_position``.
    confounders : context columns (numeric, or categorical such as hashed strings).
    method : "dr", "ipw", "snipw" or "dm".
    by_position : one row per item x position instead of per item.
    items : the item catalogue (default: the logged items).
    **options : parameters of ``BanditEstimator`` (n_folds, shrinkage, alpha, seed, ...).

    Returns
    -------
    DataFrame, one row per item: ``item, value, se, ci_low, ci_high, n_shown, ess, status,
    lift, lift_se, lift_ci_low, lift_ci_high, n_events, n_rows``. ``value`` is the expected
    outcome had the item been shown (averaged over the logged contexts and positions);
    ``lift`` is the effect of showing it instead of a uniformly random *reference* item (not
    an ``ate``: the comparison is another item, not no recommendation); the reference items
    (``lift_reference``) are those with sound weights (effective sample size at least
    ``min_ess``, no clipped row, plausible propensities), so that one item's extreme logged
    propensity moves only that item. ``n_clipped``: rows whose weight 1 / p was capped at
    ``max_weight``.
    ``status``: "ok", "few_events" (fewer than ``min_events`` nonzero 0/1 outcomes: the
    interval is rough), "poor_overlap", "clipped_weights" (some weights were capped: the value
    is biased toward zero), "implausible_propensity" (the mean inverse propensity at the
    item's position exceeds the catalogue size: see ``propensity_check_``), "too_few_rows",
    "not_shown" (no estimate for ipw / snipw). Logged propensities of a shown item outside
    (0, 1], NaN or infinite, are a ``SchemaError``.
    """
    est = BanditEstimator(method=method, **options).fit(df, item, outcome, propensity,
                                                        position, confounders, items)
    return est.item_values(by_position=True) if by_position else est.values_


def estimate_policy_value(df: pd.DataFrame, policy, item: str, outcome: str, propensity: str,
                          position: str | None = None, confounders=None, method: str = "dr",
                          by_position: bool = False, items=None, **options) -> pd.DataFrame:
    """Value a policy would have earned on the logged contexts, with a confidence interval.

    ``policy`` gives item probabilities per logged row: a (rows x items) array (columns in the
    order of ``items`` or of the sorted logged items), a DataFrame with item columns, or a
    sparse ``(item_ids, probs)`` pair of (rows x k) arrays. Other arguments as in
    ``estimate_item_values``. Returns one row (one per position with ``by_position``):
    ``value, se, ci_low, ci_high, n, ess, status, logged_value, unsupported_mass, n_clipped,
    method`` (``n_clipped``: rows the policy weighs whose weight 1 / p was capped).
    """
    est = BanditEstimator(method=method, **options).fit(df, item, outcome, propensity,
                                                        position, confounders, items)
    return est.policy_value(policy, by_position=by_position)
