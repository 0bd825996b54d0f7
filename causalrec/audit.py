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
import torch
from scipy import stats

from .base import BaseEstimator
from .estimate import ItemEffectEstimator, resolve_shrinkage
from .utils.validation import InstanceOf, Integer, Interval, Options
from .estimate.nuisance import warn_unconverged
from .glm import BlockedDesign, SegmentGLM
from .glm.layout import resolve_device
from .estimate.design import build_design
from .report import (_escape, _facts_table, _figure_to_img, _html_page, _html_table,
                     _mpl_label, _new_figure, _paragraph, _section)
from .schema import InteractionLog, SchemaError, _as_list

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
    }

    def __init__(self, *, item, treatment, outcome, group=None, confounders=None,
                 categorical=None, text=None, propensity=None, provider=None, reference=None,
                 compare="reference", fdr=0.1, min_group_rows=50, estimator=None):
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

    # ------------------------------------------------------------------ validation
    def _validate(self, df) -> InteractionLog:
        self._validate_params()
        if self.group is None:
            raise SchemaError(None, "a fairness audit needs a group column (group=...)")
        if not isinstance(self.item, str):
            raise SchemaError(str(self.item), "the audit expects a single item column")
        categorical = [c for c in _as_list(self.categorical) if c != self.group]
        log = InteractionLog(df, item=self.item, treatment=self.treatment,
                             outcome=self.outcome, confounders=self.confounders or [],
                             categorical=categorical, text=self.text or [],
                             propensity=self.propensity, group=self.group)
        groups = pd.unique(log.data[self.group])
        if len(groups) < 2:
            raise SchemaError(self.group, f"holds a single group ({groups[0]!r}); an audit "
                                          "compares at least two")
        if self.provider is not None:
            if self.provider not in log.data.columns:
                raise SchemaError(self.provider, "missing from the log (role 'provider')")
            values = log.data[self.provider]
            if values.isna().any():
                raise SchemaError(self.provider, f"{int(values.isna().sum())} missing values")
            if (log.data.groupby(self.item, sort=False)[self.provider].nunique() > 1).any():
                raise SchemaError(self.provider, "varies within an item; it must be an item "
                                                 "attribute")
        if self.reference is not None and self.reference not in set(groups):
            raise ValueError(f"reference group {self.reference!r} does not occur in column "
                             f"{self.group!r}")
        return log

    # ------------------------------------------------------------------ fitting
    def fit(self, df: pd.DataFrame) -> "FairnessAudit":
        """Run the audit on the log ``df`` (effects per item x group, disparities, exposure,
        benefit)."""
        log = self._validate(df)
        self.__dict__.pop("_metric_frame", None)  # a refit may have new data or columns
        self.data_ = df
        base = ItemEffectEstimator() if self.estimator is None else self.estimator
        self.estimator_ = ItemEffectEstimator(**base.get_params())
        self.estimator_._validate_params()
        self.alpha_ = self.estimator_.alpha
        data, numeric = self._with_text_features(log)
        # effects per item x group: the group joins the item as a segment key
        seg_log = InteractionLog(data, item=[self.item, self.group], treatment=self.treatment,
                                 outcome=self.outcome, confounders=numeric,
                                 categorical=log.categorical, propensity=self.propensity)
        effects = self.estimator_.fit(seg_log).effects_
        # name the two key columns by position (the estimator's names for them may vary)
        effects.columns = ["item", "group"] + list(effects.columns[2:])
        self.groups_ = self._group_table(data)
        self.group_effects_ = self._full_grid(effects, data)
        self.reference_ = self._pick_reference()
        status = self.groups_["status"]
        if self.compare == "reference":
            self.disparity_ = _disparity_vs_reference(self.group_effects_, self.reference_,
                                                      status, self.alpha_)
        else:
            self.disparity_ = _disparity_max_min(self.group_effects_, status, self.alpha_)
        _add_bh(self.disparity_, self.fdr)
        compared = self.disparity_.loc[self.disparity_["status"] == "ok", "item"]
        flagged = self.disparity_.loc[self.disparity_["flagged"], "item"]
        self.flagged_share_ = (flagged.nunique() / compared.nunique() if compared.nunique()
                               else np.nan)
        self.overall_disparity_ = self.overall_disparity()
        self.exposure_ = self._exposure(data, numeric, log.categorical)
        audited = status.index[status == "ok"]
        self.benefit_ = self._group_benefit(audited)
        self.providers_ = self._providers(data, audited) if self.provider is not None else None
        return self

    def _with_text_features(self, log: InteractionLog):
        """Encode text once; its components join the numeric confounders of every model."""
        numeric = list(log.confounders)
        if not log.text:
            return log.data, numeric
        from .confounders import TextConfounders

        encoder = TextConfounders(encoder=self.estimator_.text_encoder,
                                  n_components=self.estimator_.text_components)
        features = encoder.fit_transform(log.data, log.text)
        features.columns = [f"_text_{c}" for c in features.columns]
        self.text_confounders_ = encoder
        return log.data.assign(**features), numeric + list(features.columns)

    def _group_table(self, data) -> pd.DataFrame:
        t = data[self.treatment].astype(float)
        table = (pd.DataFrame({"group": data[self.group], "t": t})
                 .groupby("group", sort=True)["t"].agg(n="size", n_treated="sum"))
        table["n_treated"] = table["n_treated"].astype(np.int64)
        status = np.where(table["n"] < self.min_group_rows, "too_few_rows", "ok")
        status = np.where(table["n_treated"] == table["n"], "no_control", status)
        table["status"] = np.where(table["n_treated"] == 0, "no_treated", status)
        return table

    def _full_grid(self, effects, data) -> pd.DataFrame:
        """Every item x group pair, including pairs that never occur (status "no_rows")."""
        grid = pd.MultiIndex.from_product([np.sort(pd.unique(data[self.item])), self.groups_.index],
                                          names=["item", "group"])
        full = effects.set_index(["item", "group"]).reindex(grid).reset_index()
        absent = full["status"].isna()
        full.loc[absent, ["n", "n_treated", "n_control"]] = 0
        full.loc[absent, "status"] = "no_rows"
        for col in ("n", "n_treated", "n_control"):
            full[col] = full[col].astype(np.int64)
        return full

    def _pick_reference(self):
        if self.reference is not None:
            if self.groups_.loc[self.reference, "status"] != "ok":
                raise ValueError(f"reference group {self.reference!r} has status "
                                 f"{self.groups_.loc[self.reference, 'status']!r}")
            return self.reference
        ok = self.groups_[self.groups_["status"] == "ok"]
        if not len(ok):
            raise ValueError(f"no group can be audited: {self.groups_['status'].to_dict()}")
        return ok["n"].idxmax()

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
        z = stats.norm.ppf(1 - self.alpha_ / 2)
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
                            p_value=2 * stats.norm.sf(abs(value / se)) if se > 0 else np.nan))
        return pd.DataFrame(out, columns=["group", "reference", "n_items", "disparity", "se",
                                          "ci_low", "ci_high", "p_value"])

    # ------------------------------------------------------------------ exposure
    def _exposure(self, data, numeric, categorical) -> pd.DataFrame:
        """Raw and confounder-adjusted exposure per group (see the module docstring)."""
        exposure_log = InteractionLog(data, item=self.item, treatment=self.treatment,
                                      outcome=self.outcome, confounders=numeric,
                                      categorical=categorical)
        X = build_design(exposure_log, dtype=np.float64).X
        t = data[self.treatment].to_numpy(dtype=np.float64)
        item_codes, items = pd.factorize(data[self.item], sort=True)
        group = data[self.group].to_numpy()
        table = self.groups_.copy()
        table["exposure_rate"] = table["n_treated"] / table["n"]
        z = stats.norm.ppf(1 - self.alpha_ / 2)

        # observed vs expected: the model without the group, each group's indicator scored
        model = _ExposureModel(self.estimator_, item_codes, len(items)).fit(X, t)
        member = {g: group == g for g in table.index}
        table["expected_rate"] = [model.e_[m].mean() for m in member.values()]
        table["exposure_gap"] = [(t - model.e_)[m].mean() for m in member.values()]
        table["gap_se"] = [np.sqrt(model.score_variance(X, m.astype(np.float64))) / m.sum()
                           for m in member.values()]
        table["gap_p_value"] = 2 * stats.norm.sf(np.abs(table["exposure_gap"] / table["gap_se"]))
        table["exposure_ratio"] = table["exposure_rate"] / table["expected_rate"]
        for end, sign in (("ratio_low", -1), ("ratio_high", 1)):
            table[end] = (1 + (table["exposure_gap"] + sign * z * table["gap_se"])
                          / table["expected_rate"]).clip(lower=0)

        # logit shifts vs the reference: raw (from the rates) and adjusted (shared coefficient)
        rate = table["exposure_rate"]
        rate = rate.where(rate.between(0, 1, inclusive="neither"))
        logit = np.log(rate / (1 - rate))
        table["raw_logit_shift"] = logit - logit[self.reference_]
        table["logit_shift"], table["logit_shift_se"] = np.nan, np.nan
        table.loc[self.reference_, "logit_shift"] = 0.0
        others = [g for g in table.index[table["status"] == "ok"] if g != self.reference_]
        if others:  # fitted on the rows of the groups with status "ok" only
            rows = np.isin(group, [self.reference_] + others)
            dummies = np.column_stack([group[rows] == g for g in others]).astype(np.float64)
            shifted = _ExposureModel(self.estimator_, item_codes[rows], len(items))
            shift, cov = shifted.fit(np.hstack([X[rows], dummies]), t[rows],
                                     n_shared=len(others)).shared_tail_
            table.loc[others, "logit_shift"] = shift
            table.loc[others, "logit_shift_se"] = np.sqrt(np.diag(cov))
        shift_z = table["logit_shift"] / table["logit_shift_se"]
        table["logit_shift_low"] = table["logit_shift"] - z * table["logit_shift_se"]
        table["logit_shift_high"] = table["logit_shift"] + z * table["logit_shift_se"]
        table["logit_shift_p_value"] = 2 * stats.norm.sf(np.abs(shift_z))
        return table[[c for c in table.columns if c != "status"] + ["status"]].reset_index()

    # ------------------------------------------------------------------ benefit
    def _usable_segments(self, audited) -> pd.DataFrame:
        """Segments of audited groups on items where every such segment with rows is "ok"
        (a group that never saw an item adds nothing to its exposure or uplift)."""
        eff = self.group_effects_[self.group_effects_["group"].isin(audited)]
        eff = eff[eff["n"] > 0]
        usable = (eff["status"] == "ok").groupby(eff["item"]).all()
        eff = eff[eff["item"].isin(usable.index[usable])]
        return eff.assign(uplift=eff["n"] * eff["ate"], uplift_var=(eff["n"] * eff["se"]) ** 2)

    def _group_benefit(self, audited) -> pd.DataFrame:
        """Exposure share / uplift share per group (uplift: rows x effect, summed)."""
        per = (self._usable_segments(audited).groupby("group", sort=True)
               .agg(n_items=("item", "nunique"), n_treated=("n_treated", "sum"),
                    uplift=("uplift", "sum"), uplift_var=("uplift_var", "sum"))
               .reindex(self.groups_.index))
        per["n_items"] = per["n_items"].fillna(0).astype(np.int64)
        out = _share_ratio(per, self.alpha_)
        out["status"] = self.groups_["status"].where(self.groups_["status"] != "ok", out["status"])
        return out.rename_axis("group").reset_index()

    def _providers(self, data, audited) -> pd.DataFrame:
        """Exposure share / uplift share per provider, from the same item x group segments
        (an item's uplift sums its groups'; rows of groups not audited are left out)."""
        provider = data.groupby(self.item, sort=True)[self.provider].first()
        seg = self._usable_segments(audited)
        seg = seg.assign(provider=provider.reindex(seg["item"]).to_numpy())
        per = (seg.groupby("provider", sort=True)
               .agg(n_items=("item", "nunique"), n_treated=("n_treated", "sum"),
                    uplift=("uplift", "sum"), uplift_var=("uplift_var", "sum"))
               .reindex(np.sort(provider.unique())))
        per["n_items"] = per["n_items"].fillna(0).astype(np.int64)
        out = _share_ratio(per, self.alpha_)
        out.insert(0, "n_items_total", provider.value_counts().reindex(out.index))
        return out.rename_axis("provider").reset_index()

    # ------------------------------------------------------------------ results
    def _fitted(self) -> None:
        self._check_is_fitted("disparity_")

    def metric_frame(self):
        """Outcome and exposure rates by group as a fairlearn ``MetricFrame`` (descriptive,
        not causal). Built on first use and cached: MetricFrame is slow on large logs."""
        if not hasattr(self, "_metric_frame"):
            self._fitted()
            self._metric_frame = _metric_frame(self.data_, self.treatment, self.outcome, self.group)
        return self._metric_frame

    @property
    def metrics(self) -> pd.DataFrame:
        """``metric_frame().by_group``: exposure rate, outcome rate, outcome rate with and
        without the recommendation, per group."""
        self._fitted()
        return self.metric_frame().by_group

    def summary(self) -> "AuditSummary":
        self._fitted()
        return AuditSummary(self)

    def to_html(self) -> str:
        """The audit as one self-contained HTML page (the effect report's style)."""
        self._fitted()
        return _audit_html(self)

    def report(self, path) -> Path:
        """Write the self-contained HTML audit to ``path``; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_html(), encoding="utf-8")
        return path


# ---------------------------------------------------------------------- disparity tables
def _segments_of(effects, group):
    return effects.loc[effects["group"] == group].set_index("item")


def _disparity_vs_reference(effects, reference, groups, alpha) -> pd.DataFrame:
    """``ate(group) - ate(reference)`` per item for every other group; independent segments."""
    ref = _segments_of(effects, reference)
    parts = []
    for g, group_status in groups.items():
        if g == reference:
            continue
        cur = _segments_of(effects, g).reindex(ref.index)
        diff = cur["ate"] - ref["ate"]
        se = np.sqrt(cur["se"] ** 2 + ref["se"] ** 2)
        # Student t with the smaller segment's degrees of freedom when the estimator gives
        # them (small arms have heavy-tailed influence values), else normal (dof = inf)
        dof = (np.fmin(cur["dof"], ref["dof"]).to_numpy(float) if "dof" in effects
               else np.full(len(ref), np.inf))
        z = stats.t.ppf(1 - alpha / 2, dof)
        status = np.where(ref["status"] != "ok", "reference_" + ref["status"], "ok")
        status = np.where(cur["status"] != "ok", "group_" + cur["status"], status)
        if group_status != "ok":
            status = np.full(len(ref), "group_" + group_status, dtype=object)
        parts.append(pd.DataFrame({
            "item": ref.index, "group": g, "reference": reference,
            "disparity": diff.to_numpy(), "se": se.to_numpy(),
            "ci_low": (diff - z * se).to_numpy(), "ci_high": (diff + z * se).to_numpy(),
            "p_value": 2 * stats.t.sf(np.abs((diff / se).to_numpy()), dof),
            "ate_group": cur["ate"].to_numpy(), "ate_reference": ref["ate"].to_numpy(),
            "n_group": cur["n"].to_numpy(), "n_reference": ref["n"].to_numpy(),
            "status": status}))
    return _blank_failed(pd.concat(parts, ignore_index=True))


def _disparity_max_min(effects, groups, alpha) -> pd.DataFrame:
    """Per item: best- minus worst-served group; p-value of the chi-square homogeneity test."""
    audited = [g for g, s in groups.items() if s == "ok"]
    usable = effects[effects["group"].isin(audited) & (effects["status"] == "ok")]
    z = stats.norm.ppf(1 - alpha / 2)
    rows = []
    for item in pd.unique(effects["item"]):
        part = usable[usable["item"] == item]
        row = dict(item=item, group=None, reference=None, disparity=np.nan, se=np.nan,
                   ci_low=np.nan, ci_high=np.nan, p_value=np.nan, ate_group=np.nan,
                   ate_reference=np.nan, n_group=0, n_reference=0,
                   n_groups=len(part), status="fewer_than_two_groups")
        if len(part) >= 2:
            hi, lo = part.loc[part["ate"].idxmax()], part.loc[part["ate"].idxmin()]
            w = 1 / part["se"].to_numpy() ** 2
            ate = part["ate"].to_numpy()
            q = float(w @ (ate - (w @ ate) / w.sum()) ** 2)
            diff, se = hi["ate"] - lo["ate"], np.hypot(hi["se"], lo["se"])
            row.update(group=hi["group"], reference=lo["group"], disparity=diff, se=se,
                       ci_low=diff - z * se, ci_high=diff + z * se,
                       p_value=stats.chi2.sf(q, len(part) - 1), ate_group=hi["ate"],
                       ate_reference=lo["ate"], n_group=hi["n"], n_reference=lo["n"],
                       status="ok")
        rows.append(row)
    return pd.DataFrame(rows)


def _blank_failed(table: pd.DataFrame) -> pd.DataFrame:
    bad = table["status"] != "ok"
    table.loc[bad, ["disparity", "se", "ci_low", "ci_high", "p_value"]] = np.nan
    return table


def _add_bh(table: pd.DataFrame, fdr: float) -> None:
    """Benjamini-Hochberg q-values over the rows with status "ok"; ``flagged`` = q <= fdr."""
    ok = (table["status"] == "ok").to_numpy() & np.isfinite(table["p_value"].to_numpy(float))
    q = np.full(len(table), np.nan)
    if ok.any():
        q[ok] = stats.false_discovery_control(table["p_value"].to_numpy(float)[ok])
    position = table.columns.get_loc("p_value") + 1
    table.insert(position, "q_value", q)
    table.insert(position + 1, "flagged", ok & (q <= fdr))


# ---------------------------------------------------------------------- exposure model
class _ExposureModel:
    """Logistic exposure model on all items at once, with the estimator's pooled penalties:
    item intercepts, item slopes shrunk toward shared slopes; the last ``n_shared`` columns
    get one coefficient shared by every item (a group's logit shift). Float64 for the SEs."""

    def __init__(self, estimator, item_codes, n_items):
        self.estimator = estimator
        self.device = resolve_device(estimator.device)
        self.n_items = n_items
        self.item_codes = item_codes

    def _model(self, p, n_shared) -> SegmentGLM:
        est = self.estimator
        return SegmentGLM(family="logistic", pooled=True, penalty=est.penalty,
                          shrinkage=resolve_shrinkage(est.shrinkage, p - 1),
                          intercept_penalty=est.intercept_penalty,
                          shared_columns=list(range(p - 1 - n_shared, p - 1)),
                          max_iter=max(est.max_iter, 50), tol=1e-6, device=self.device,
                          dtype=torch.float64)

    def _design(self, X) -> BlockedDesign:
        return BlockedDesign(torch.as_tensor(X, dtype=torch.float64, device=self.device),
                             self.item_codes, self.n_items)

    def fit(self, X, t, n_shared=0) -> "_ExposureModel":
        design = self._design(X)
        tb, blocks = design.pad(t), design.blocks()
        self.model_ = self._model(design.X.shape[-1], n_shared).fit_blocks(
            design, tb, blocks, n_segments=self.n_items)
        warn_unconverged(self.model_.converged_, np.arange(self.n_items), "audit exposure model")
        self.e_ = design.unpad(self.model_.predict_blocks(design, blocks)).cpu().numpy()
        if n_shared:
            cov = self.model_.shared_covariance(design, tb, blocks)
            self.shared_tail_ = (self.model_.shared_coef_[-n_shared:], cov[-n_shared:, -n_shared:])
        return self

    def score_variance(self, X, indicator) -> float:
        """Efficient score variance of an indicator column added with coefficient 0: the
        variance of ``sum over its rows of (t - e)`` under the fitted model."""
        design = self._design(np.column_stack([X, indicator]))
        zero = lambda a: torch.cat([a, a.new_zeros(a.shape[:-1] + (1,))], -1)
        fit = self.model_.fit_
        cov = self._model(design.X.shape[-1], 1).shared_covariance(design, design.pad(np.zeros(len(indicator))),
                                        design.blocks(), coef=(zero(fit.shared), zero(fit.local)))
        return float(1.0 / cov[-1, -1])


# ---------------------------------------------------------------------- benefit, metrics
def _share_ratio(per: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Exposure share over uplift share, per key.

    ``per`` holds ``n_items, n_treated, uplift`` (summed n x ate) and ``uplift_var`` per key;
    keys with no estimable item enter neither total. Exposure counts are observed; the uplift
    share ``s`` gets a delta-method interval (keys are independent), and the ratio's interval
    is ``exposure_share / [s_high, s_low]`` (Fieller-like): when ``s`` may be zero the upper
    end is infinite rather than a misleadingly finite number.
    """
    has = per["n_items"] > 0
    exposed, uplift, var = (per[c].where(has) for c in ("n_treated", "uplift", "uplift_var"))
    total_e, total_m, total_v = exposed.sum(), uplift.sum(), var.sum()
    exposure_share, uplift_share = exposed / total_e, uplift / total_m
    # d share_g / d uplift_h = (1[h = g] - share_g) / total
    share_var = (var * (1 - 2 * uplift_share) + uplift_share ** 2 * total_v) / total_m ** 2
    share_se = np.sqrt(share_var.clip(lower=0))
    z = stats.norm.ppf(1 - alpha / 2)
    low, high = uplift_share - z * share_se, uplift_share + z * share_se
    positive = (uplift > 0) & (total_m > 0)
    out = pd.DataFrame({
        "n_items": per["n_items"], "n_treated": per["n_treated"].where(has, 0).astype(np.int64),
        "exposure_share": exposure_share, "uplift": uplift, "uplift_se": np.sqrt(var),
        "uplift_share": uplift_share, "uplift_share_se": share_se,
        "exposure_uplift_ratio": (exposure_share / uplift_share).where(positive),
        "ratio_low": (exposure_share / high).where(positive & (high > 0)),
        "ratio_high": (exposure_share / low).where(low > 0, np.inf).where(positive)},
        index=per.index)
    out["status"] = np.where(~has, "no_estimable_items",
                             np.where(positive, "ok", "no_positive_uplift"))
    return out


def _exposure_rate(y_true, y_pred):
    return float(np.mean(y_pred))


def _outcome_rate(y_true, y_pred):
    return float(np.mean(y_true))


def _outcome_if_recommended(y_true, y_pred):
    chosen = np.asarray(y_pred) == 1
    return float(np.mean(np.asarray(y_true)[chosen])) if chosen.any() else np.nan


def _outcome_if_not(y_true, y_pred):
    chosen = np.asarray(y_pred) == 0
    return float(np.mean(np.asarray(y_true)[chosen])) if chosen.any() else np.nan


def _metric_frame(data, treatment, outcome, group):
    """Descriptive rates by group (not causal: the recommended rows differ from the rest)."""
    from fairlearn.metrics import MetricFrame

    return MetricFrame(
        metrics={"exposure_rate": _exposure_rate,
                 "outcome_rate": _outcome_rate, "outcome_if_recommended": _outcome_if_recommended,
                 "outcome_if_not_recommended": _outcome_if_not},
        y_true=data[outcome].to_numpy(dtype=float), y_pred=data[treatment].to_numpy(dtype=float),
        sensitive_features=pd.Series(data[group].to_numpy(), name="group"))


# ---------------------------------------------------------------------- summary
def _interval(value, low, high) -> str:
    return f"{value:.4g} [{low:.4g}, {high:.4g}]" if np.isfinite(value) else "n/a"


class AuditSummary:
    """Headline numbers of a fitted ``FairnessAudit``: ``info`` (name -> formatted value),
    ``str(summary)`` as text, ``_repr_html_`` in notebooks."""

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
        self.info = info

    def __str__(self) -> str:
        width = max(len(k) for k in self.info) + 2
        rule = "=" * (width + 40)
        title = "Fairness audit of recommendation effects and exposure"
        lines = [rule, title.center(len(rule)), rule]
        lines += [f"{k + ':':<{width}}{v}" for k, v in self.info.items()]
        return "\n".join(lines + [rule])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return _facts_table(self.info, caption="Fairness audit")


# ---------------------------------------------------------------------- HTML report
def _audit_html(audit: FairnessAudit) -> str:
    """The audit page, built from the effect report's shared helpers (same look)."""
    parts = [("Summary", "summary", _summary_section(audit)),
             ("Effect disparity", "effects", _effects_section(audit)),
             ("Exposure disparity", "exposure", _exposure_section(audit)),
             ("Exposure versus benefit", "benefit", _benefit_section(audit)),
             ("Outcome metrics by group", "metrics", _metrics_section(audit)),
             ("How to read this audit", "method", _method_section(audit))]
    links = "".join(f'<li><a href="#{a}">{_escape(t)}</a></li>' for t, a, _ in parts)
    nav = f"<nav><ul>{links}</ul></nav>"
    body = nav + "".join(_section(t, content, a) for t, a, content in parts)
    subtitle = (f"Groups in column {audit.group!r}; effect of recommending each item on "
                f"{audit.outcome!r}, and who gets recommended")
    return _html_page("Fairness audit of recommendations", body, subtitle)


def _figure(fig, alt, caption) -> str:
    return (f"<figure>{_figure_to_img(fig, alt)}<figcaption>{_escape(caption)}"
            "</figcaption></figure>")


def _summary_section(audit) -> str:
    text = ("For every item and user group the audit estimates the causal effect of "
            "recommending the item (AIPW, adjusted for the confounders), compares groups, "
            "and asks whether each group is recommended as often as users like them and in "
            "proportion to the benefit it would get.")
    return (_paragraph(text) + _facts_table(audit.summary().info, caption="Headline numbers")
            + _html_table(audit.groups_, index=True, caption="Groups"))


def _effects_section(audit) -> str:
    d = audit.disparity_
    ok = d[d["status"] == "ok"]
    out = _html_table(audit.overall_disparity_, caption="Overall disparity, weighted by the "
                                                         "items' rows in the compared groups")
    if len(ok):
        shown = ok.assign(_z=(ok["disparity"] / ok["se"]).abs()).nlargest(25, "_z")
        shown = shown.sort_values("disparity", kind="stable")
        fig = _new_figure(7.5, 1.2 + 0.26 * len(shown))
        ax = fig.subplots()
        y = np.arange(len(shown), dtype=float)
        for flag, color, label in ((False, "#888888", "not flagged"),
                                   (True, "#b42318", f"flagged (BH, FDR {audit.fdr:g})")):
            part = shown["flagged"].to_numpy() == flag
            if part.any():
                s = shown[part]
                ax.errorbar(s["disparity"], y[part], xerr=[s["disparity"] - s["ci_low"],
                                                            s["ci_high"] - s["disparity"]],
                            fmt="o", ms=4, capsize=2, color=color, label=label)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [_mpl_label(f"{i} ({g})") for i, g in zip(shown["item"], shown["group"])],
                      fontsize=8)
        ax.set_xlabel("effect in group minus effect in reference group")
        ax.legend(fontsize=8, loc="lower right")
        out += _figure(fig, "per-item effect disparity",
                       "Items with the strongest evidence of a disparity (largest |disparity / "
                       "se|), with their confidence intervals.")
    else:
        out += _paragraph("No item could be compared between groups.", "warn")
    ordered = d.sort_values(["flagged", "p_value"], ascending=[False, True], kind="stable")
    out += _html_table(ordered, max_rows=40, caption="Per-item disparity (strongest first)")
    not_ok = audit.group_effects_[audit.group_effects_["status"] != "ok"]
    if len(not_ok):
        counts = not_ok.groupby(["group", "status"]).size().rename("segments").reset_index()
        out += _html_table(counts, caption="Item x group segments without a usable estimate")
    cols = ["item", "group", "ate", "se", "ci_low", "ci_high", "n", "n_treated", "status"]
    return out + _html_table(audit.group_effects_[cols], max_rows=40,
                             caption="Effects per item and group")


def _exposure_section(audit) -> str:
    e = audit.exposure_
    fig = _new_figure(7.0, 3.2)
    ax = fig.subplots()
    x = np.arange(len(e), dtype=float)
    ax.bar(x - 0.2, e["exposure_rate"], 0.4, color="#0b5cad", label="observed")
    ax.bar(x + 0.2, e["expected_rate"], 0.4, color="#bbbbbb", label="expected for users like them")
    ax.set_xticks(x, [_mpl_label(g) for g in e["group"]])
    ax.set_ylabel("share of opportunities recommended")
    ax.legend(fontsize=8)
    caption = ("Observed exposure rate per group next to the rate the exposure model (fitted "
               "without the group) predicts for the same users, items and contexts.")
    cols = ["group", "n", "n_treated", "exposure_rate", "expected_rate", "exposure_ratio",
            "ratio_low", "ratio_high", "raw_logit_shift", "logit_shift", "logit_shift_low",
            "logit_shift_high", "logit_shift_p_value", "status"]
    return (_figure(fig, "exposure by group", caption)
            + _html_table(e[cols], caption="Exposure by group"))


def _share_figure(table, key, title):
    fig = _new_figure(7.0, 3.2)
    ax = fig.subplots()
    x = np.arange(len(table), dtype=float)
    ax.bar(x - 0.2, table["exposure_share"], 0.4, color="#0b5cad", label="share of recommendations")
    ax.bar(x + 0.2, table["uplift_share"], 0.4, color="#2da44e", label="share of causal uplift")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [_mpl_label(v, 14) for v in table[key]], fontsize=8,
                  rotation=30 if len(table) > 6 else 0)
    ax.legend(fontsize=8)
    return _figure(fig, title, f"{title}: a ratio above 1 means more exposure than the "
                               "group's share of the benefit.")


def _benefit_section(audit) -> str:
    text = ("Uplift of a group is the summed estimated effect over its opportunities "
            "(rows x effect), on the items every audited group can estimate; its share is "
            "compared with the group's share of the recommendations on the same items.")
    out = _paragraph(text) + _share_figure(audit.benefit_, "group",
                                           "Exposure versus uplift per group")
    out += _html_table(audit.benefit_, caption="Exposure versus benefit per group")
    if audit.providers_ is not None:
        out += _share_figure(audit.providers_, "provider", "Exposure versus uplift per provider")
        out += _html_table(audit.providers_,
                           caption=f"Exposure versus benefit per {audit.provider}")
    return out


def _metrics_section(audit) -> str:
    return (_paragraph("Descriptive rates by group (fairlearn MetricFrame). Outcome rates with "
                       "and without a recommendation are not causal effects: recommended rows "
                       "differ from the others.")
            + _html_table(audit.metrics, index=True, caption="Rates by group"))


def _method_section(audit) -> str:
    notes = [
        "Effects per item and group come from one cross-fitted AIPW pass with segments item "
        "x group; a difference between groups uses the two segments' independent standard "
        "errors. Benjamini-Hochberg controls the share of false flags among flagged items.",
        "The overall disparity weights each item by its rows in the two compared groups.",
        "Compare = 'max-min': gaps between the best- and worst-served groups are selected, "
        "so their intervals are too narrow and the overall gap is biased upward; the p-value "
        "is the chi-square test that all groups' effects are equal.",
        "The exposure ratio compares observed exposure with the exposure a model without the "
        "group predicts for the same users, items and contexts (a score test of the group "
        "indicator). The logit shift is the group's coefficient in the same model with the "
        "group added (shared by all items); it is conditional on the confounders, so it "
        "differs from the raw logit shift even when the group is independent of them.",
        "Exposure versus benefit: the uplift share has a delta-method interval; the ratio's "
        "interval divides the exposure share by its ends, so it is unbounded when the uplift "
        "share may be zero.",
        "Segments and groups without enough rows are reported with their status, never dropped.",
    ]
    return "<ul class=\"plain\">" + "".join(f"<li>{_escape(n)}</li>" for n in notes) + "</ul>"
