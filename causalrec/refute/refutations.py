"""Refutation checks of every item's effect: each check is one call of the batched estimator
over all items (no loop over items), and a summary of the verdicts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..backend import backend_for
from ..schema import InteractionLog, _as_list
from .checks import CHECKS, choose_refuters
from .local import LocalRefutationRows
from .loop import run_refutations

__all__ = ["refute_item_effects", "summarize_refutations", "CHECKS"]


def refute_item_effects(df: pd.DataFrame, item: str, treatment: str, outcome: str,
                        confounders=None, categorical=None, text=None, propensity=None,
                        by=None, graph=None, *, checks=None, n_subsets: int = 5,
                        subset_fraction: float = 0.8, rcc_tolerance: float = 1.0,
                        seed: int = 0, text_encoder=None, text_components: int = 8,
                        missing: str = "error", **options) -> pd.DataFrame:
    """Refutation checks of every item's effect, batched over items.

    Takes the arguments of ``estimate_item_effects`` (``**options`` go to the estimator) and
    runs, each as one estimator call over all items:

    * ``"placebo"``: the treatment is permuted within each item (and ``by`` segment), so
      the true effect is zero. ``passed`` means not significant at ``alpha``; about
      ``alpha`` of the items should fail (see :func:`summarize_refutations`). A logged
      ``propensity`` does not describe the permuted treatment, so it is not used here.
    * ``"random_common_cause"``: an independent N(0, 1) column is added as a confounder.
      ``passed`` means the estimate moved by at most ``rcc_tolerance`` original SEs. The
      original cross-fitting folds are kept, so only the added column can move anything.
    * ``"subset"``: ``n_subsets`` re-estimates, each on a random ``subset_fraction`` of every
      item's rows. A subsample estimate differs from the full one with standard deviation
      about ``se * sqrt((1 - f) / f)``; ``passed`` means within ``z_{1-alpha/2}`` of those.
      Each row keeps its original fold.

    Text columns are embedded once (``TextConfounders``) and their components reused as
    numeric confounders by every call. ``checks`` : default all of ``CHECKS``. ``missing``:
    the log's missing-value policy, as for ``estimate_item_effects`` ("indicator": missing
    values in numeric confounders are filled and adjusted for); the original fit and every
    refit use it (each fit fixes its own fill on its own rows, as the estimator does).

    On a Spark DataFrame the checks run through the Spark estimator and the same loop
    (``causalrec.spark.refute``): "placebo" and "random_common_cause" (the default there),
    with Spark's seeded draws; "subset" raises a ``ValueError`` naming the alternatives.
    A ``graph`` maps its adjustment set to roles by the Spark column types, as locally.

    Returns
    -------
    DataFrame, one row per item, check and replicate: the item keys, ``check, replicate,
    estimate, se, p_value, status, original_ate, original_se, shift, shift_in_se, passed``
    (``passed`` is NA where the item has no "ok" estimate in either run), and the run's
    settings ``alpha, subset_fraction, rcc_tolerance`` as columns (they survive merges).
    """
    on_spark = backend_for(df, None, spark="refutations")
    if on_spark is not None:
        return on_spark(df, item, treatment, outcome, confounders, categorical, text, propensity,
                        by, graph, checks=checks, rcc_tolerance=rcc_tolerance, seed=seed,
                        text_encoder=text_encoder, text_components=text_components,
                        missing=missing, **options)
    from ..estimate import estimate_item_effects
    from ..schema import split_roles
    from ..estimate.folds import assign_folds, fold_content

    refuters = choose_refuters(checks, rcc_tolerance=rcc_tolerance, n_subsets=n_subsets,
                               subset_fraction=subset_fraction)
    if not 0 < subset_fraction < 1:
        raise ValueError(f"subset_fraction must be in (0, 1), got {subset_fraction!r}")
    if int(n_subsets) < 1:
        raise ValueError(f"n_subsets must be at least 1, got {n_subsets!r}")
    alpha = options.get("alpha", 0.05)
    # one split unless asked: the checks keep each row's fold, while repeats beyond the first
    # would draw theirs from the changed data (an added column would move them)
    options = {"n_repeats": 1, **options}
    keys = [item] + _as_list(by)
    # the log door before anything reads a column (folds cast the treatment to integers)
    _, *adjust = split_roles(item, by, confounders, categorical, text)
    InteractionLog(df, item=keys, treatment=treatment, outcome=outcome, confounders=adjust[0],
                   categorical=adjust[1], text=adjust[2], propensity=propensity, missing=missing)
    df, confounders, categorical = _resolve_confounders(
        df, confounders, categorical, text, graph, text_encoder, text_components)

    def estimate(data, *, confounders=confounders, propensity=propensity, folds=None):
        eff = estimate_item_effects(data, item, treatment, outcome, confounders=confounders,
                                    categorical=categorical, propensity=propensity, by=by,
                                    seed=seed, folds=folds, missing=missing, **options)
        return eff.rename(columns={"item": item, "ate": "estimate"})

    segment = df.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    content = fold_content(keys, confounders, categorical, propensity=propensity)
    folds = assign_folds(df, content, segment, df[treatment].to_numpy(dtype=np.int64),
                         df[outcome].to_numpy(dtype=float), options.get("n_folds", 2), seed,
                         item_columns=keys)
    rows = LocalRefutationRows(df, treatment=treatment, confounders=confounders,
                               segment=segment, folds=folds, rng=np.random.default_rng(seed),
                               estimate=estimate)
    return run_refutations(rows, refuters, keys, alpha=alpha, settings=dict(
        subset_fraction=subset_fraction, rcc_tolerance=rcc_tolerance))


def adjustment_roles(frame, confounders, categorical, text, graph) -> tuple[list, list, list]:
    """The confounder, categorical and text columns: the arguments plus, with a ``graph``,
    its adjustment set mapped to roles by ``frame``'s column types (on Spark an empty frame
    with the Spark frame's types)."""
    confounders, categorical, text = map(_as_list, (confounders, categorical, text))
    if graph is None:
        return confounders, categorical, text
    roles = graph.merge_adjustment(frame, confounders, categorical, text)
    return roles["confounders"], roles["categorical"], roles["text"]


def _resolve_confounders(df, confounders, categorical, text, graph, encoder, n_components):
    """Confounder columns from the arguments and the graph; text becomes numeric components."""
    confounders, categorical, text = adjustment_roles(df, confounders, categorical, text, graph)
    if text:
        from ..confounders import TextConfounders
        components = TextConfounders(encoder=encoder, n_components=n_components
                                     ).fit_transform(df, text)
        df = pd.concat([df, components], axis=1)
        confounders += list(components.columns)
    return df, confounders, categorical


def refutation_setting(refutations: pd.DataFrame, name: str, default):
    """A setting of a ``refute_item_effects`` run (``alpha``, ``subset_fraction``,
    ``rcc_tolerance``): its column, else (older tables) ``attrs``, else ``default``."""
    if name in refutations.columns and len(refutations):
        return refutations[name].iloc[0]
    return refutations.attrs.get(name, default)


def refutation_keys(refutations: pd.DataFrame) -> list[str]:
    """The item key columns of a ``refute_item_effects`` table: the columns before ``check``."""
    return list(refutations.columns[: refutations.columns.get_loc("check")])


def summarize_refutations(refutations: pd.DataFrame, by_item: bool = False) -> pd.DataFrame:
    """Summaries of :func:`refute_item_effects` output.

    ``by_item=False``: one row per check with ``n_items`` evaluated, ``share_passed``; for
    the placebo the share of items significant at ``alpha`` with its exact (Clopper-Pearson)
    95% binomial interval, ``placebo_ok`` when it covers ``alpha``; the median and max of
    ``|shift_in_se|``; for subsets the median over items of ``sd_in_se`` (the standard
    deviation of an item's subset estimates over its original SE) next to the
    ``expected_sd_in_se = sqrt((1 - f) / f)`` of a stable estimator.

    ``by_item=True``: one row per item and check: mean estimate, ``sd_in_se``, the number of
    replicates evaluated and passed.
    """
    alpha = refutation_setting(refutations, "alpha", 0.05)
    fraction = refutation_setting(refutations, "subset_fraction", 0.8)
    keys = refutation_keys(refutations)
    ok = refutations[refutations["passed"].notna()]
    if by_item:
        grouped = ok.groupby(keys + ["check"], sort=True)
        out = grouped.agg(estimate=("estimate", "mean"), sd=("estimate", "std"),
                          original_ate=("original_ate", "first"),
                          original_se=("original_se", "first"),
                          n_replicates=("passed", "size"), n_passed=("passed", "sum"))
        out["sd_in_se"] = out.pop("sd") / out["original_se"]
        return out.reset_index()
    rows = []
    for check, part in ok.groupby("check", sort=True):
        items = part.groupby(keys)
        row = {"check": check, "n_items": items.ngroups,
               "share_passed": float(part["passed"].mean()),
               "median_abs_shift_in_se": float(part["shift_in_se"].abs().median()),
               "max_abs_shift_in_se": float(part["shift_in_se"].abs().max())}
        if check == "placebo":
            k, n = int((part["p_value"] < alpha).sum()), len(part)
            interval = stats.binomtest(k, n).proportion_ci(0.95) if n else None
            row.update(share_significant=k / n if n else np.nan, expected_share=alpha,
                       share_ci_low=interval.low if n else np.nan,
                       share_ci_high=interval.high if n else np.nan,
                       placebo_ok=bool(n and interval.low <= alpha <= interval.high))
        if check == "subset":
            sd_in_se = items["estimate"].std() / items["original_se"].first()
            row.update(median_sd_in_se=float(sd_in_se.median()),
                       expected_sd_in_se=float(np.sqrt((1 - fraction) / fraction)))
        rows.append(row)
    return pd.DataFrame(rows)
