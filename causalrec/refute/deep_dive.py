"""One item's effect and refutations from causalrec next to DoWhy's own."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..estimate.missing_values import fill_of
from ..inference import p_value
from .refutations import _resolve_confounders, refute_item_effects

__all__ = ["deep_dive"]


def deep_dive(df: pd.DataFrame, item_id, item: str, treatment: str, outcome: str,
              confounders=None, categorical=None, text=None, propensity=None, graph=None, *,
              method: str = "backdoor.linear_regression", num_simulations: int = 20,
              n_subsets: int = 5, subset_fraction: float = 0.8, seed: int = 0,
              refutations: pd.DataFrame | None = None, text_encoder=None,
              text_components: int = 8, **options) -> pd.DataFrame:
    """One item's effect and refutations from causalrec next to DoWhy's own.

    causalrec: :func:`refute_item_effects` over the whole log (the same batched run as the
    main analysis; pass its output as ``refutations`` to reuse it), rows of ``item_id``. DoWhy: a ``CausalModel`` on that item's rows with
    the recommendation graph over the same adjustment columns (text as its numeric
    components), estimated with ``method`` (e.g. ``"backdoor.linear_regression"``,
    ``"backdoor.propensity_score_weighting"``) and refuted with its placebo
    (permute), random-common-cause and data-subset refuters (``num_simulations`` each).
    With ``missing="indicator"`` (an option of the causalrec run) DoWhy gets the same
    policy: the log's median fill and a ``<col>_missing`` 0/1 column among its confounders.

    Returns
    -------
    DataFrame, one row per source (``causalrec``, ``dowhy``) and check (``estimate``,
    ``placebo``, ``random_common_cause``, ``subset``): ``estimate`` (mean over replicates /
    simulations), ``se`` (the estimate's SE; for refutations of causalrec the SE of the
    run, or the spread of the subset replicates), ``p_value``, ``original_ate``.
    ``attrs["dowhy_estimand"]`` holds DoWhy's identified estimand.
    """
    from ..identify import CausalGraph

    if not (df[item] == item_id).any():
        raise ValueError(f"item {item_id!r} has no rows in column {item!r}")
    full, conf, cat = _resolve_confounders(df, confounders, categorical, text, graph,
                                           text_encoder, text_components)
    if refutations is None:
        refutations = refute_item_effects(
            full, item, treatment, outcome, confounders=conf, categorical=cat,
            propensity=propensity, n_subsets=n_subsets, subset_fraction=subset_fraction,
            seed=seed, **options)
    ours = refutations[refutations[item] == item_id]
    if ours.empty:
        raise ValueError(f"item {item_id!r} is not in the refutations table")
    original = ours[["original_ate", "original_se"]].iloc[0]
    rows = [dict(source="causalrec", check="estimate", estimate=original["original_ate"],
                 se=original["original_se"], p_value=_normal_p(*original))]
    for check, part in ours.groupby("check", sort=False):
        spread = part["estimate"].std() if len(part) > 1 else part["se"].iloc[0]
        rows.append(dict(source="causalrec", check=check, estimate=part["estimate"].mean(),
                         se=spread, p_value=part["p_value"].mean() if len(part) == 1
                         else np.nan))

    data = full.loc[full[item] == item_id, [treatment, outcome, *conf, *cat]]
    data, indicators = _fill_for_dowhy(data, full, conf, options.get("missing", "error"))
    model = CausalGraph.recommendation(treatment, outcome,
                                       context=conf + indicators + cat).to_dowhy(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimand = model.identify_effect(proceed_when_unidentifiable=True)
        estimate = model.estimate_effect(estimand, method_name=method, test_significance=True)
        value = float(estimate.value)
        se, p = _dowhy_se_p(estimate)
        rows.append(dict(source="dowhy", check="estimate", estimate=value, se=se, p_value=p))
        refuters = {"placebo": ("placebo_treatment_refuter", dict(placebo_type="permute")),
                    "random_common_cause": ("random_common_cause", {}),
                    "subset": ("data_subset_refuter", dict(subset_fraction=subset_fraction))}
        for check, (name, kwargs) in refuters.items():
            result = model.refute_estimate(estimand, estimate, method_name=name,
                                           num_simulations=num_simulations, random_seed=seed,
                                           show_progress_bar=False, **kwargs)
            p_value = (result.refutation_result or {}).get("p_value", np.nan)
            rows.append(dict(source="dowhy", check=check, estimate=float(result.new_effect),
                             se=np.nan, p_value=float(p_value)))
    out = pd.DataFrame(rows)
    out["original_ate"] = np.where(out["source"] == "causalrec", original["original_ate"], value)
    out.attrs.update(item=item_id, dowhy_estimand=estimand, method=method)
    return out


def _fill_for_dowhy(data: pd.DataFrame, full: pd.DataFrame, numeric: list,
                    missing: str) -> tuple[pd.DataFrame, list]:
    """The item's rows for DoWhy under causalrec's missing-value policy: with "indicator"
    each numeric confounder's missing entries take the median of its observed values over
    the whole log (causalrec's fill) and a 0/1 column ``<col>_missing`` joins the
    adjustment set where the item has any (DoWhy's estimators take no NaN; a constant
    column would only be dropped). -> (rows, indicator columns)."""
    if missing != "indicator":
        return data, []
    data, indicators = data.copy(), []
    for col in numeric:
        gaps = data[col].isna().to_numpy()
        if not gaps.any():
            continue
        fill, _ = fill_of(full[col].to_numpy(dtype=np.float64, na_value=np.nan))
        name = f"{col}_missing"
        while name in data.columns or name in full.columns:
            name += "_"
        data[col] = data[col].fillna(fill)
        data[name] = gaps.astype(np.float64)
        indicators.append(name)
    return data, indicators


def _normal_p(ate: float, se: float) -> float:
    return p_value(ate, se) if se > 0 else np.nan


def _dowhy_se_p(estimate) -> tuple[float, float]:
    """Standard error and p-value of a DoWhy estimate, NaN where DoWhy has none."""
    try:
        se = float(np.ravel(estimate.get_standard_error())[0])
    except Exception:  # DoWhy raises NotImplementedError and others by estimator
        se = np.nan
    significance = getattr(estimate, "test_stat_significance", None)
    try:
        p = float(np.ravel(significance()["p_value"])[0]) if significance else np.nan
    except Exception:
        p = np.nan
    return se, p
