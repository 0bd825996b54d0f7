"""Fairness audit: do recommendations help every user group, and is each group exposed as much
as users like them?

Four questions, each answered with intervals:

* Effect disparity: per item and group, the AIPW effect of recommending the item (segments
  item x group, one batched, cross-fitted pass of ``ItemEffectEstimator``); per item the
  difference between groups, Benjamini-Hochberg over items; an overall traffic-weighted
  disparity.
* Exposure disparity: how often each group is recommended, raw and adjusted for the
  confounders. The adjusted comparison fits the exposure model (item intercepts, item slopes
  pooled toward shared slopes, as in the estimator) without the group, and compares each
  group's observed exposure with the exposure the model expects for users like them (a
  score test of the group indicator). A second fit adds one shared logit shift per group.
* Exposure versus benefit: a group's (or provider's) share of the recommendations over its
  share of the causal uplift, in the spirit of disparate treatment (Singh & Joachims 2018)
  with the causal effect as the merit.
* Outcome metrics by group (fairlearn ``MetricFrame``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..backend import backend_for
from ..base import BaseEstimator
from ..estimate import ItemEffectEstimator
from ..inference import critical_value, p_value
from ..schema import MISSING_POLICIES
from ..summary import Summary
from ..utils.validation import InstanceOf, Integer, Interval, Options
from .benefit import group_benefit, metric_frame, provider_benefit
from .disparity import add_bh, disparity_max_min, disparity_vs_reference
from .exposure import exposure_from_sums
from .plan import AuditPlan
from .rows import AuditRows, LocalAuditRows

__all__ = ["FairnessAudit", "AuditSummary"]

COMPARE = ("reference", "max-min")


class FairnessAudit(BaseEstimator):
    """Group fairness of a recommender's causal effects and of its exposure.

    Parameters
    ----------
    item, treatment, outcome, confounders, categorical, text, propensity :
        the log's column roles, as for ``estimate_item_effects``; the log itself goes to
        ``fit(df)``. When the group column
        is also listed in ``categorical`` it is left out of every model: the effect segments
        already split by group, and the exposure comparison asks about users *like* the
        group's users, so the group itself must not be adjusted away.
    group : the sensitive user-group column (required, at least two groups).
    provider : optional item-level column (provider, category): exposure versus summed causal
        uplift per provider.
    reference : the group every other group is compared with; default the largest group
        (most rows) among groups with status "ok".
    compare : "reference" (default): one row per item and non-reference group with the
        signed difference ``ate(group) - ate(reference)``. "max-min": one row per item with
        the gap between its best- and worst-served groups; its p-value is the chi-square test
        that all groups' effects are equal (valid), while its ``se`` / CI are those of the
        selected pair and therefore too narrow (the pair was chosen for being far apart).
    fdr : Benjamini-Hochberg level for ``flagged``.
    min_group_rows : groups with fewer rows get status "too_few_rows" and are left out of the
        group-level comparisons (their item segments are still estimated and reported).
    estimator : an (unfitted) ``ItemEffectEstimator`` whose parameters every effect and
        exposure model here uses (method, nuisance, n_folds, alpha, seed, device,
        text_encoder, ...); its ``alpha`` sets every interval. Default: its defaults.
    missing : "error" (default) or "indicator": missing values in numeric confounders are
        bad input, or are filled and adjusted for with a 0/1 indicator column each, in the
        effect and the exposure models alike (``InteractionLog``).

    Everything is computed by ``fit(df)``; results read before it raise ``NotFittedError``.
    Group labels keep their type; all tables name the group column ``group``.

    Statuses: a group is "ok", "too_few_rows", "no_treated" or "no_control"; a segment has
    the estimator's status ("ok", "too_few_rows", "poor_overlap", ...) or "no_rows"; a
    disparity row is "ok" or names the side that failed ("group_no_treated",
    "reference_too_few_rows", ...). Only "ok" rows enter BH, overall and benefit figures.

    Attributes (after ``fit``)
    --------------------------
    group_effects_ : item x group effects ``item, group, ate, se, ci_low, ci_high, p_value, n,
        n_treated, n_control, status, ...``; every item x group pair appears.
    disparity_ : per item (and compared group): ``item, group, reference, disparity, se,
        ci_low, ci_high, p_value, q_value, flagged, ate_group, ate_reference, n_group,
        n_reference, status``; BH runs over all "ok" rows of the table.
    overall_disparity_ : traffic-weighted mean disparity per compared group (see
        ``overall_disparity``). ``flagged_share_`` : share of compared items with a flag.
    exposure_ : per group ``n, n_treated, exposure_rate`` (raw), ``expected_rate`` (the
        model's prediction for the same users, items and contexts, fitted without the group),
        ``exposure_gap`` (observed - expected) with ``gap_se`` and ``gap_p_value`` (score
        test), ``exposure_ratio`` (observed / expected) with ``ratio_low, ratio_high``,
        ``raw_logit_shift`` (from the raw rates) and ``logit_shift`` (adjusted, a shared
        coefficient of the group vs the reference) with ``logit_shift_se, _low, _high,
        _p_value``, ``status``.
    benefit_ : per group ``n_items, n_treated, exposure_share, uplift, uplift_se,
        uplift_share, uplift_share_se, exposure_uplift_ratio, ratio_low, ratio_high, status``.
    providers_ : the same per provider, plus ``n_items_total`` (None without ``provider``).
    groups_ : per group ``n, n_treated, status``.
    reference_ : the reference group. ``estimator_`` : the fitted ItemEffectEstimator.
    alpha_ : 1 - confidence level of every interval (the estimator's ``alpha``).
    """

    _parameter_constraints = {
        "compare": [Options(*COMPARE)],
        "fdr": [Interval(0, 1, "neither")],
        "min_group_rows": [Integer(1, None)],
        "estimator": [Options(None), InstanceOf((ItemEffectEstimator,), "an ItemEffectEstimator")],
        "missing": [Options(*MISSING_POLICIES)],
    }

    def __init__(self, *, item, treatment, outcome, group=None, confounders=None,
                 categorical=None, text=None, propensity=None, provider=None, reference=None,
                 compare="reference", fdr=0.1, min_group_rows=50, estimator=None,
                 missing="error"):
        self.item = item
        self.treatment = treatment
        self.outcome = outcome
        self.confounders = confounders
        self.categorical = categorical
        self.text = text
        self.propensity = propensity
        self.group = group
        self.provider = provider
        self.reference = reference
        self.compare = compare
        self.fdr = fdr
        self.min_group_rows = min_group_rows
        self.estimator = estimator
        self.missing = missing

    # ------------------------------------------------------------------ fitting
    def fit(self, df) -> "FairnessAudit":
        """Run the audit on the log ``df`` (effects per item x group, disparities, exposure,
        benefit). A Spark DataFrame runs on the cluster (``causalrec.spark.audit``) and gives
        the same tables; ``df`` may also be a rows backend (``LocalAuditRows``,
        ``SparkAuditRows(sdf, barrier=False)``).

        One sequence of steps whatever holds the rows: the backend does the row work
        (``causalrec.fairness.rows``), the plan turns its small facts into the tables."""
        self._validate_params()
        plan = AuditPlan.from_audit(self)
        rows = df if isinstance(df, AuditRows) else self._rows_of(df)
        log = rows.validate(plan)
        counts = rows.group_counts(plan)
        plan.check_groups(counts.index.to_numpy())
        provider = (plan.item_providers(rows.provider_facts(plan))
                    if plan.provider is not None else None)
        plan.check_reference(counts.index)
        self._start(rows.data)
        text_columns, encoder = rows.add_text(plan, self.estimator_)
        if encoder is not None:
            self.text_confounders_ = encoder
        confounders = list(log.confounders) + text_columns
        effects = rows.segment_effects(plan, self.estimator_, confounders, log.categorical)
        items = np.sort(pd.unique(effects.iloc[:, 0]))  # the item key; every item has a segment
        self._compare(plan, effects, counts, items)
        self.exposure_ = exposure_from_sums(
            self, rows.exposure_sums(self, confounders, log.categorical, items))
        self._benefit(provider)
        self._group_rates = rows.group_rates()
        return self

    @staticmethod
    def _rows_of(df):
        """The backend for ``df``'s type: Spark (imported only then) or pandas."""
        return backend_for(df, LocalAuditRows, spark="audit_rows")(df)

    def _start(self, data) -> None:
        """The fitted estimator's copy and the interval level, before any model is fitted."""
        for cached in ("_metric_frame", "_group_rates", "text_confounders_"):  # a refit
            self.__dict__.pop(cached, None)
        self.data_ = data
        base = ItemEffectEstimator() if self.estimator is None else self.estimator
        self.estimator_ = ItemEffectEstimator(**base.get_params(deep=False))
        self.estimator_._validate_params()
        self.alpha_ = self.estimator_.alpha

    def _compare(self, plan, effects, counts, items) -> None:
        """Group statuses, the full item x group grid, the reference and the disparities,
        from the segment effects, the per-group ``n, n_treated`` and the sorted items."""
        self.groups_ = plan.group_table(counts)
        self.group_effects_ = plan.full_grid(effects, items, self.groups_.index)
        self.reference_ = plan.pick_reference(self.groups_)
        status = self.groups_["status"]
        if self.compare == "reference":
            self.disparity_ = disparity_vs_reference(self.group_effects_, self.reference_,
                                                      status, self.alpha_)
        else:
            self.disparity_ = disparity_max_min(self.group_effects_, status, self.alpha_)
        add_bh(self.disparity_, self.fdr)
        compared = self.disparity_.loc[self.disparity_["status"] == "ok", "item"]
        flagged = self.disparity_.loc[self.disparity_["flagged"], "item"]
        self.flagged_share_ = (flagged.nunique() / compared.nunique() if compared.nunique()
                               else np.nan)
        self.overall_disparity_ = self.overall_disparity()

    def _benefit(self, provider) -> None:
        """Exposure versus uplift per group, and per provider (``provider``: item -> provider,
        sorted by item; None without a provider column)."""
        status = self.groups_["status"]
        audited = status.index[status == "ok"]
        self.benefit_ = group_benefit(self, audited)
        self.providers_ = (provider_benefit(self, provider, audited) if provider is not None
                           else None)

    # ------------------------------------------------------------------ disparity
    def overall_disparity(self, items=None) -> pd.DataFrame:
        """Traffic-weighted mean disparity per compared group, over ``items`` (default all).

        Items enter when their comparison has status "ok"; item i weighs ``n_i`` (its rows in
        the two compared groups). Item estimates come from disjoint rows, so the standard
        error is ``sqrt(sum w_i^2 se_i^2)``. Returns ``group, reference, n_items, disparity,
        se, ci_low, ci_high, p_value``. Under ``compare="max-min"`` the gaps are selected and
        the mean is biased upward.
        """
        self._fitted()
        rows = self.disparity_[self.disparity_["status"] == "ok"]
        if items is not None:
            rows = rows[rows["item"].isin(list(items))]
        z = critical_value(self.alpha_)
        if self.compare == "max-min":  # one pooled gap: the best-served group varies by item
            rows = rows.assign(group="max", reference="min")
        out = []
        for group, part in rows.groupby("group", sort=True):
            w = (part["n_group"] + part["n_reference"]).to_numpy(float)
            w = w / w.sum()
            value = float(w @ part["disparity"])
            se = float(np.sqrt(w ** 2 @ part["se"] ** 2))
            out.append(dict(group=group, reference=part["reference"].iloc[0], n_items=len(part),
                            disparity=value, se=se, ci_low=value - z * se, ci_high=value + z * se,
                            p_value=p_value(value, se) if se > 0 else np.nan))
        return pd.DataFrame(out, columns=["group", "reference", "n_items", "disparity", "se",
                                          "ci_low", "ci_high", "p_value"])

    # ------------------------------------------------------------------ results
    def _fitted(self) -> None:
        self._check_is_fitted("disparity_")

    def metric_frame(self):
        """Outcome and exposure rates by group as a fairlearn ``MetricFrame`` (descriptive,
        not causal). Built on first use and cached: MetricFrame is slow on large logs."""
        if not hasattr(self, "_metric_frame"):
            self._fitted()
            if self._group_rates is not None:
                raise TypeError("metric_frame() needs the rows in pandas; after a Spark fit "
                                "read metrics (the same rates, aggregated on Spark)")
            self._metric_frame = metric_frame(self.data_, self.treatment, self.outcome, self.group)
        return self._metric_frame

    @property
    def metrics(self) -> pd.DataFrame:
        """``metric_frame().by_group``: exposure rate, outcome rate, outcome rate with and
        without the recommendation, per group."""
        self._fitted()
        if self._group_rates is not None:  # aggregated where the rows live (Spark)
            return self._group_rates
        return self.metric_frame().by_group

    def summary(self) -> "AuditSummary":
        self._fitted()
        return AuditSummary(self)

    def to_html(self) -> str:
        """The audit as one self-contained HTML page (the effect report's style)."""
        self._fitted()
        from ..reporting.audit_report import audit_html

        return audit_html(self)

    def report(self, path) -> Path:
        """Write the self-contained HTML audit to ``path`` (atomically: the page is built
        first, then moved into place); returns the path."""
        from ..utils.io import write_text

        return write_text(path, self.to_html())


# ---------------------------------------------------------------------- summary
def _interval(value, low, high) -> str:
    return f"{value:.4g} [{low:.4g}, {high:.4g}]" if np.isfinite(value) else "n/a"


class AuditSummary(Summary):
    """Headline numbers of a fitted ``FairnessAudit``: ``info`` (name -> formatted value)."""

    title = "Fairness audit of recommendation effects and exposure"

    def __init__(self, audit: FairnessAudit):
        groups, level = audit.groups_, f"{1 - audit.alpha_:.0%} CI"
        info = {
            "Rows": f"{int(groups['n'].sum()):,}",
            "Items": audit.group_effects_["item"].nunique(),
            "Groups (rows)": ", ".join(f"{g} ({n:,})" for g, n in groups["n"].items()),
            "Reference group": audit.reference_ if audit.compare == "reference" else "(max-min)",
        }
        not_ok = groups[groups["status"] != "ok"]
        if len(not_ok):
            info["Groups not audited"] = ", ".join(f"{g}: {s}" for g, s in not_ok["status"].items())
        d = audit.disparity_
        compared = d.loc[d["status"] == "ok", "item"].nunique()
        flagged = d.loc[d["flagged"], "item"].nunique()
        info["Items compared"] = f"{compared} of {d['item'].nunique()}"
        info[f"Items with a disparity (BH, FDR {audit.fdr:g})"] = (
            f"{flagged} ({audit.flagged_share_:.1%})" if compared else "n/a")
        for r in audit.overall_disparity_.itertuples():
            info[f"Overall effect disparity {r.group} - {r.reference} ({level})"] = \
                _interval(r.disparity, r.ci_low, r.ci_high)
        for r in audit.exposure_.itertuples():
            if r.group != audit.reference_ and r.status == "ok":
                info[f"Adjusted exposure logit shift {r.group} vs {audit.reference_}"] = \
                    _interval(r.logit_shift, r.logit_shift_low, r.logit_shift_high)
        for r in audit.exposure_.itertuples():
            info[f"Exposure / expected for users like them, {r.group}"] = \
                _interval(r.exposure_ratio, r.ratio_low, r.ratio_high)
        for r in audit.benefit_.itertuples():
            info[f"Exposure share / uplift share, {r.group}"] = \
                _interval(r.exposure_uplift_ratio, r.ratio_low, r.ratio_high)
        super().__init__(info)
