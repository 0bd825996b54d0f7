"""Exposure disparity: how often each group is recommended, raw and against the exposure a
model fitted without the group expects for users like them (a score test of the group
indicator), and the group's logit shift when it joins the model as a shared column."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..estimate import resolve_shrinkage
from ..estimate.design import build_design
from ..estimate.nuisance import warn_unconverged
from ..glm import BlockedDesign, SegmentGLM
from ..glm.layout import resolve_device
from ..inference import critical_value, p_value
from ..schema import InteractionLog

__all__ = ["exposure_table"]


def exposure_table(audit, data, numeric, categorical) -> pd.DataFrame:
    """Raw and confounder-adjusted exposure per group of a ``FairnessAudit`` being fitted
    (its ``groups_``, ``reference_``, ``alpha_`` and ``estimator_`` are set)."""
    exposure_log = InteractionLog(data, item=audit.item, treatment=audit.treatment,
                                  outcome=audit.outcome, confounders=numeric,
                                  categorical=categorical)
    X = build_design(exposure_log, dtype=np.float64).X
    t = data[audit.treatment].to_numpy(dtype=np.float64)
    item_codes, items = pd.factorize(data[audit.item], sort=True)
    group = data[audit.group].to_numpy()
    table = audit.groups_.copy()
    table["exposure_rate"] = table["n_treated"] / table["n"]
    z = critical_value(audit.alpha_)

    # observed vs expected: the model without the group, each group's indicator scored
    model = _ExposureModel(audit.estimator_, item_codes, len(items)).fit(X, t)
    member = {g: group == g for g in table.index}
    table["expected_rate"] = [model.e_[m].mean() for m in member.values()]
    table["exposure_gap"] = [(t - model.e_)[m].mean() for m in member.values()]
    table["gap_se"] = [np.sqrt(model.score_variance(X, m.astype(np.float64))) / m.sum()
                       for m in member.values()]
    table["gap_p_value"] = p_value(table["exposure_gap"], table["gap_se"])
    table["exposure_ratio"] = table["exposure_rate"] / table["expected_rate"]
    for end, sign in (("ratio_low", -1), ("ratio_high", 1)):
        table[end] = (1 + (table["exposure_gap"] + sign * z * table["gap_se"])
                      / table["expected_rate"]).clip(lower=0)

    # logit shifts vs the reference: raw (from the rates) and adjusted (shared coefficient)
    rate = table["exposure_rate"]
    rate = rate.where(rate.between(0, 1, inclusive="neither"))
    logit = np.log(rate / (1 - rate))
    table["raw_logit_shift"] = logit - logit[audit.reference_]
    table["logit_shift"], table["logit_shift_se"] = np.nan, np.nan
    table.loc[audit.reference_, "logit_shift"] = 0.0
    others = [g for g in table.index[table["status"] == "ok"] if g != audit.reference_]
    if others:  # fitted on the rows of the groups with status "ok" only
        rows = np.isin(group, [audit.reference_] + others)
        dummies = np.column_stack([group[rows] == g for g in others]).astype(np.float64)
        shifted = _ExposureModel(audit.estimator_, item_codes[rows], len(items))
        shift, cov = shifted.fit(np.hstack([X[rows], dummies]), t[rows],
                                 n_shared=len(others)).shared_tail_
        table.loc[others, "logit_shift"] = shift
        table.loc[others, "logit_shift_se"] = np.sqrt(np.diag(cov))
    table["logit_shift_low"] = table["logit_shift"] - z * table["logit_shift_se"]
    table["logit_shift_high"] = table["logit_shift"] + z * table["logit_shift_se"]
    table["logit_shift_p_value"] = p_value(table["logit_shift"], table["logit_shift_se"])
    return table[[c for c in table.columns if c != "status"] + ["status"]].reset_index()


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
