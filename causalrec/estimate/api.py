"""The one-call door: ``estimate_item_effects(df, ...)`` for pandas and Spark frames."""
from __future__ import annotations

import pandas as pd

from ..backend import backend_for
from ..schema import InteractionLog, Roles, split_roles  # noqa: F401 (split_roles re-exported)
from .estimator import ItemEffectEstimator

__all__ = ["estimate_item_effects", "split_roles"]


def estimate_item_effects(df: pd.DataFrame, item: str | list[str], treatment: str, outcome: str,
                          confounders=None, categorical=None, text=None, propensity=None,
                          by=None, graph=None, folds=None, unit=None, missing="error",
                          **options) -> pd.DataFrame:
    """Average causal effect of recommending each item, with honest intervals.

    Parameters
    ----------
    df : the log, one row per (user, item, context) opportunity.
    item, treatment, outcome : column names (treatment is 0/1); ``item`` may list several
        key columns, the same as the first with the others as ``by``.
    confounders, categorical, text : numeric, categorical and free-text confounders.
    propensity : logged probability of treatment; when given, IPW/AIPW use it.
    by : extra segment columns (e.g. a user group): effects per item x group.
    graph : a ``CausalGraph``; its backdoor adjustment set supplies the confounders.
    folds : optional cross-fitting fold per row (see ``ItemEffectEstimator.fit``); on a Spark
        frame, the name of an integer column holding them (see ``estimate_item_effects_spark``).
    unit : the column of the unit a row belongs to (user or session id, any hashable values):
        all of a unit's rows share one cross-fitting fold, for every item and nuisance
        (``causalrec.estimate.folds.unit_folds``). Without it, a column that looks like a
        recurring unit id draws a ``DataWarning`` suggesting it.
    missing : "error" (default) or "indicator": missing values in numeric confounders are
        bad input, or are filled and adjusted for with a 0/1 indicator column each
        (``InteractionLog``).
    **options : parameters of ``ItemEffectEstimator`` (method, nuisance, n_folds, seed, ...).

    Returns
    -------
    DataFrame, one row per item: ``item, ate, se, ci_low, ci_high, p_value, n, n_treated,
    n_control, status`` then diagnostics (``naive_ate``, arm means, propensity range,
    effective sample sizes per arm, clipped / trimmed row counts, the share of rows in
    categorical levels one arm never reaches). ``status`` is "ok" or the
    reason the item could not be (reliably) estimated; items without an estimate get NaN.
    """
    fit = backend_for(df, _item_effects, spark="item_effects")
    return fit(df, item, treatment, outcome, confounders, categorical, text, propensity, by,
               graph, folds, unit=unit, missing=missing, **options)


def _item_effects(df: pd.DataFrame, item, treatment, outcome, confounders=None,
                  categorical=None, text=None, propensity=None, by=None, graph=None,
                  folds=None, unit=None, missing="error", **options) -> pd.DataFrame:
    """``estimate_item_effects`` of a pandas frame."""
    if graph is not None:
        roles = graph.merge_adjustment(df, confounders, categorical, text)
        confounders, categorical, text = roles["confounders"], roles["categorical"], roles["text"]
    # the keys are [item] + by, a list even without by
    log = InteractionLog.from_roles(df, Roles.from_arguments(
        item=item, by=by or [], treatment=treatment, outcome=outcome, confounders=confounders,
        categorical=categorical, text=text, propensity=propensity, unit=unit, missing=missing))
    return ItemEffectEstimator(**options).fit(log, folds=folds).effects_
