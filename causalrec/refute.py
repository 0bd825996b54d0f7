"""Is each item's effect believable? Refutation checks, sensitivity to hidden confounding,
and a DoWhy cross-check of one item.

Every refutation check is one call of the batched estimator over all items (no loop over
items): a placebo treatment, an added random common cause and random subsets of the log.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .schema import _as_list

__all__ = ["refute_item_effects", "summarize_refutations", "sensitivity", "robustness_value",
           "e_value", "deep_dive", "CHECKS"]

CHECKS = ("placebo", "random_common_cause", "subset")
RANDOM_COMMON_CAUSE = "_random_common_cause"
_STATS = ["estimate", "se", "p_value", "status"]


# ----------------------------------------------------------------- refutations
def refute_item_effects(df: pd.DataFrame, item: str, treatment: str, outcome: str,
                        confounders=None, categorical=None, text=None, propensity=None,
                        by=None, graph=None, *, checks=CHECKS, n_subsets: int = 5,
                        subset_fraction: float = 0.8, rcc_tolerance: float = 1.0,
                        seed: int = 0, text_encoder=None, text_components: int = 8,
                        **options) -> pd.DataFrame:
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
    numeric confounders by every call.

    Returns
    -------
    DataFrame, one row per item, check and replicate: the item keys, ``check, replicate,
    estimate, se, p_value, status, original_ate, original_se, shift, shift_in_se, passed``
    (``passed`` is NA where the item has no "ok" estimate in either run). ``attrs`` keeps
    ``alpha`` and ``subset_fraction`` for :func:`summarize_refutations`.
    """
    from .estimate import estimate_item_effects
    from .estimate.design import assign_folds

    unknown = set(_as_list(checks)) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; choose from {CHECKS}")
    if not 0 < subset_fraction < 1:
        raise ValueError(f"subset_fraction must be in (0, 1), got {subset_fraction!r}")
    if int(n_subsets) < 1:
        raise ValueError(f"n_subsets must be at least 1, got {n_subsets!r}")
    alpha = options.get("alpha", 0.05)
    keys = [item] + _as_list(by)
    df, confounders, categorical = _resolve_confounders(
        df, confounders, categorical, text, graph, text_encoder, text_components)
    rng = np.random.default_rng(seed)

    def estimate(data, *, confounders=confounders, propensity=propensity, folds=None):
        eff = estimate_item_effects(data, item, treatment, outcome, confounders=confounders,
                                    categorical=categorical, propensity=propensity, by=by,
                                    seed=seed, folds=folds, **options)
        return eff.rename(columns={"item": item, "ate": "estimate"})

    segment = df.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    folds = assign_folds(df, keys + confounders + categorical, segment,
                         df[treatment].to_numpy(dtype=np.int64), df[outcome].to_numpy(dtype=float),
                         options.get("n_folds", 2), seed)
    original = estimate(df, folds=folds)
    runs = []
    if "placebo" in checks:
        placebo = df.assign(**{treatment: _permute_within(df[treatment].to_numpy(), segment, rng)})
        runs.append(("placebo", 0, estimate(placebo, propensity=None)))
    if "random_common_cause" in checks:
        noisy = df.assign(**{RANDOM_COMMON_CAUSE: rng.standard_normal(len(df))})
        runs.append(("random_common_cause", 0,
                     estimate(noisy, confounders=confounders + [RANDOM_COMMON_CAUSE], folds=folds)))
    if "subset" in checks:
        for replicate in range(int(n_subsets)):
            keep = _subsample_within(segment, subset_fraction, rng)
            runs.append(("subset", replicate, estimate(df[keep], folds=folds[keep])))

    out = _tidy(original, runs, keys, alpha, subset_fraction, rcc_tolerance)
    out.attrs.update(alpha=alpha, subset_fraction=subset_fraction, rcc_tolerance=rcc_tolerance,
                     keys=keys)
    return out


def _resolve_confounders(df, confounders, categorical, text, graph, encoder, n_components):
    """Confounder columns from the arguments and the graph; text becomes numeric components."""
    confounders, categorical, text = map(_as_list, (confounders, categorical, text))
    if graph is not None:
        roles = graph.merge_adjustment(df, confounders, categorical, text)
        confounders, categorical, text = roles["confounders"], roles["categorical"], roles["text"]
    if text:
        from .confounders import TextConfounders
        components = TextConfounders(encoder=encoder, n_components=n_components
                                     ).fit_transform(df, text)
        df = pd.concat([df, components], axis=1)
        confounders += list(components.columns)
    return df, confounders, categorical


def _permute_within(values: np.ndarray, segment: np.ndarray, rng) -> np.ndarray:
    """Shuffle values within each segment (each segment keeps its own multiset)."""
    by_segment = np.argsort(segment, kind="stable")
    shuffled = np.lexsort((rng.random(len(values)), segment))
    out = np.empty_like(values)
    out[shuffled] = values[by_segment]
    return out


def _subsample_within(segment: np.ndarray, fraction: float, rng) -> np.ndarray:
    """A random ``fraction`` of every segment's rows (rounded), as a boolean mask."""
    order = np.lexsort((rng.random(len(segment)), segment))
    counts = np.bincount(segment)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(segment)) - starts[segment[order]]
    keep = np.zeros(len(segment), dtype=bool)
    keep[order] = rank < np.round(fraction * counts)[segment[order]]
    return keep


def _tidy(original, runs, keys, alpha, fraction, rcc_tolerance) -> pd.DataFrame:
    base = original[keys + ["estimate", "se", "status"]].rename(
        columns={"estimate": "original_ate", "se": "original_se", "status": "_original_status"})
    frames = [run[keys + _STATS].assign(check=check, replicate=replicate)
              for check, replicate, run in runs]
    if not frames:
        raise ValueError("no checks to run")
    out = pd.concat(frames, ignore_index=True).merge(base, on=keys, how="left")
    out["shift"] = out["estimate"] - out["original_ate"]
    out["shift_in_se"] = out["shift"] / out["original_se"]
    z = stats.norm.ppf(1 - alpha / 2)
    check = out["check"].to_numpy()
    passed = np.select(
        [check == "placebo", check == "random_common_cause"],
        [out["p_value"] >= alpha, out["shift_in_se"].abs() <= rcc_tolerance],
        out["shift_in_se"].abs() <= z * np.sqrt((1 - fraction) / fraction))
    evaluated = (out["status"] == "ok") & ((check == "placebo") | (out["_original_status"] == "ok"))
    out["passed"] = pd.array(np.where(evaluated, passed, pd.NA), dtype="boolean")
    out = out.drop(columns="_original_status")
    columns = keys + ["check", "replicate", "estimate", "se", "p_value", "status",
                      "original_ate", "original_se", "shift", "shift_in_se", "passed"]
    return out[columns].sort_values(keys + ["check", "replicate"], ignore_index=True)


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
    attrs = refutations.attrs
    alpha, fraction = attrs.get("alpha", 0.05), attrs.get("subset_fraction", 0.8)
    keys = attrs.get("keys") or [c for c in refutations.columns if c == "item"]
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


# ----------------------------------------------------------------- sensitivity
def robustness_value(t, dof, q: float = 1.0, alpha: float | None = None) -> np.ndarray:
    """Robustness value of Cinelli & Hazlett (2020) from t-statistics and degrees of freedom.

    With the partial Cohen's f of the treatment, ``f_q = q |t| / sqrt(dof)``:

    * ``alpha=None``: ``RV_q = 0.5 * (sqrt(f_q^4 + 4 f_q^2) - f_q^2)``, the partial R^2 a
      hidden confounder must have with both treatment and outcome (each, given the
      observed confounders) to reduce the estimate by ``100 q %``.
    * ``alpha``: ``RV_{q,alpha}``, the strength that moves the ``1 - alpha`` interval to
      include ``(1 - q)`` times the estimate: with ``f* = t_{1-alpha/2, dof-1} / sqrt(dof-1)``
      and ``f_qa = f_q - f*``, ``RV = 0`` if ``f_qa <= 0``, else
      ``0.5 * (sqrt(f_qa^4 + 4 f_qa^2) - f_qa^2)``; when ``f_q > 1 / f*`` the worst
      confounder explains all residual outcome variance instead and
      ``RV = (f_q^2 - f*^2) / (1 + f_q^2)``.

    Derived for OLS; for other estimators (AIPW) it is the usual t-statistic approximation.
    """
    t, dof = np.asarray(t, dtype=float), np.asarray(dof, dtype=float)
    f_q = q * np.abs(t) / np.sqrt(dof)
    with np.errstate(invalid="ignore", divide="ignore"):
        f_crit = (np.zeros_like(f_q) if alpha is None
                  else stats.t.ppf(1 - alpha / 2, dof - 1) / np.sqrt(dof - 1))
        f_qa = np.maximum(f_q - f_crit, 0.0)
        rv = 0.5 * (np.sqrt(f_qa ** 4 + 4 * f_qa ** 2) - f_qa ** 2)
        extreme = f_q * f_crit > 1
        rv = np.where(extreme, (f_q ** 2 - f_crit ** 2) / (1 + f_q ** 2), rv)
    return np.where(np.isfinite(f_q) & np.isfinite(f_crit), rv, np.nan)


def e_value(risk_ratio) -> np.ndarray:
    """E-value of a risk ratio (VanderWeele & Ding 2017): ``RR + sqrt(RR (RR - 1))`` after
    inverting ratios below 1; the risk ratio a hidden confounder needs with both treatment
    and outcome to explain the association away. 1 means no confounding is needed."""
    rr = np.asarray(risk_ratio, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rr = np.where(rr < 1, 1 / rr, rr)
        return rr + np.sqrt(rr * (rr - 1))


def sensitivity(effects: pd.DataFrame, q: float = 1.0, alpha: float = 0.05, dof=None,
                outcome: str = "auto", baseline: str = "mu0_mean") -> pd.DataFrame:
    """Add per-item sensitivity to hidden confounding to an effects table.

    Columns added:

    * ``t_stat = ate / se``; ``dof`` (``n - 2`` unless given: a number, an array or a column
      name); ``partial_r2 = t^2 / (t^2 + dof)``, the partial R^2 of treatment with outcome,
      which a confounder explaining all residual outcome variance must reach with the
      treatment to explain the estimate away.
    * ``rv`` (``RV_q``) and ``rv_ci`` (``RV_{q,alpha}``), see :func:`robustness_value`;
      ``rv_ci`` is 0 when the ``1 - alpha`` interval already covers ``(1 - q) * ate``.
    * ``risk_ratio``, ``e_value`` and ``e_value_ci`` (1 when ``[ci_low, ci_high]`` covers
      zero; otherwise the E-value of the interval limit nearest the null):

      - binary outcome: ``RR = (p0 + ate) / p0`` with ``p0`` the item's mean untreated
        outcome (column ``baseline``, by default the mean outcome-model prediction under
        no exposure); interval limits likewise with ``p0`` held fixed;
      - continuous outcome: ``RR = exp(0.91 * ate / outcome_sd)`` (VanderWeele & Ding's
        approximation for standardised mean differences).

      ``outcome="auto"`` calls an outcome binary when the items' overall outcome variance
      equals ``m (1 - m)`` (true of 0/1 outcomes only).
    """
    out = effects.copy()
    ate, se = out["ate"].to_numpy(float), out["se"].to_numpy(float)
    if dof is None:
        dof = out["n"].to_numpy(float) - 2
    elif isinstance(dof, str):
        dof = out[dof].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = ate / se
    out["t_stat"] = t
    out["dof"] = np.asarray(dof, dtype=float) * np.ones_like(t)
    out["partial_r2"] = t ** 2 / (t ** 2 + out["dof"].to_numpy())
    out["rv"] = robustness_value(t, out["dof"], q=q)
    out["rv_ci"] = robustness_value(t, out["dof"], q=q, alpha=alpha)

    kind = _outcome_kind(out) if outcome == "auto" else outcome
    if kind == "binary":
        p0 = out[baseline].to_numpy(float)
        to_rr = lambda d: np.maximum(p0 + d, 1e-12) / p0  # noqa: E731
    elif kind == "continuous":
        sd = out["outcome_sd"].to_numpy(float)
        to_rr = lambda d: np.exp(0.91 * d / sd)  # noqa: E731
    else:
        raise ValueError(f"outcome must be 'auto', 'binary' or 'continuous', got {outcome!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        low, high = out["ci_low"].to_numpy(float), out["ci_high"].to_numpy(float)
        nearest = np.where(ate > 0, to_rr(low), to_rr(high))
        out["risk_ratio"] = to_rr(ate)
        out["e_value"] = e_value(out["risk_ratio"])
        ci_value = np.where((low <= 0) & (high >= 0), 1.0, e_value(nearest))
    out["e_value_ci"] = np.where(np.isfinite(low) & np.isfinite(high), ci_value, np.nan)
    return out


def _outcome_kind(effects: pd.DataFrame) -> str:
    need = {"treated_mean", "control_mean", "n_treated", "n_control", "outcome_sd"}
    if not need <= set(effects.columns):
        raise ValueError(f"cannot tell the outcome type: pass outcome='binary' or "
                         f"'continuous' (auto needs columns {sorted(need)})")
    e = effects.dropna(subset=sorted(need))
    mean = ((e["treated_mean"] * e["n_treated"] + e["control_mean"] * e["n_control"])
            / (e["n_treated"] + e["n_control"]))
    bernoulli = np.isclose(e["outcome_sd"] ** 2, mean * (1 - mean), rtol=1e-6, atol=1e-9)
    return "binary" if len(e) and bool(bernoulli.all()) else "continuous"


# ----------------------------------------------------------------- one item, with DoWhy
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

    Returns
    -------
    DataFrame, one row per source (``causalrec``, ``dowhy``) and check (``estimate``,
    ``placebo``, ``random_common_cause``, ``subset``): ``estimate`` (mean over replicates /
    simulations), ``se`` (the estimate's SE; for refutations of causalrec the SE of the
    run, or the spread of the subset replicates), ``p_value``, ``original_ate``.
    ``attrs["dowhy_estimand"]`` holds DoWhy's identified estimand.
    """
    from .graph import CausalGraph

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
    model = CausalGraph.recommendation(treatment, outcome, context=conf + cat).to_dowhy(data)
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


def _normal_p(ate: float, se: float) -> float:
    return float(2 * stats.norm.sf(abs(ate / se))) if se > 0 else np.nan


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
