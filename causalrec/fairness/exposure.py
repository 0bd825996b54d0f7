"""Exposure disparity: how often each group is recommended, raw and against the exposure a
model fitted without the group expects for users like them (a score test of the group
indicator), and the group's logit shift when it joins the model as a shared column."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..estimate import resolve_shrinkage
from ..estimate.nuisance import warn_unconverged
from ..glm import BlockedDesign, SegmentGLM
from ..glm.layout import resolve_device
from ..glm.reducer import Reducer
from ..inference import critical_value, p_value

__all__ = ["exposure_sums", "exposure_from_sums", "shifted_groups"]


def shifted_groups(audit) -> list:
    """The groups that get a logit shift against the reference: the other "ok" groups."""
    status = audit.groups_["status"]
    return [g for g in status.index[status == "ok"] if g != audit.reference_]


def exposure_sums(estimator, X, t, item_codes, n_items, group, groups, others, reference,
                  reducer=None) -> dict:
    """The exposure models' per-group facts: sums of expected exposure and of residuals, score
    variances of each group's indicator, the groups' logit shifts and their covariance.
    ``reducer`` sums over solvers holding other items (a Spark barrier stage); every solver
    gets the totals."""
    reducer = Reducer() if reducer is None else reducer
    total = lambda values: reducer.sum(torch.tensor(values, dtype=torch.float64)).numpy()
    # observed vs expected: the model without the group, each group's indicator scored
    model = _ExposureModel(estimator, item_codes, n_items, reducer).fit(X, t)
    member = [group == g for g in groups]
    out = dict(e_sum=total([model.e_[m].sum() for m in member]),
               gap_sum=total([(t - model.e_)[m].sum() for m in member]),
               score_var=np.array([model.score_variance(X, m.astype(np.float64)) for m in member]),
               shift=None, shift_cov=None)
    if others:  # fitted on the rows of the groups with status "ok" only
        rows = np.isin(group, [reference] + others)
        dummies = np.column_stack([group[rows] == g for g in others]).astype(np.float64)
        shifted = _ExposureModel(estimator, item_codes[rows], n_items, reducer)
        out["shift"], out["shift_cov"] = shifted.fit(np.hstack([X[rows], dummies]), t[rows],
                                                     n_shared=len(others)).shared_tail_
    return out


def exposure_from_sums(audit, sums: dict) -> pd.DataFrame:
    """The exposure table from ``exposure_sums`` (groups in ``audit.groups_`` order)."""
    table = audit.groups_.copy()
    n = table["n"].to_numpy(np.float64)
    table["exposure_rate"] = table["n_treated"] / table["n"]
    z = critical_value(audit.alpha_)
    table["expected_rate"] = sums["e_sum"] / n
    table["exposure_gap"] = sums["gap_sum"] / n
    table["gap_se"] = np.sqrt(sums["score_var"]) / n
    table["gap_p_value"] = p_value(table["exposure_gap"], table["gap_se"])
    table["exposure_ratio"] = table["exposure_rate"] / table["expected_rate"]
    for end, sign in (("ratio_low", -1), ("ratio_high", 1)):
        table[end] = (1 + (table["exposure_gap"] + sign * z * table["gap_se"])
                      / table["expected_rate"]).clip(lower=0)

    # logit shifts vs the reference: raw (from the rates) and adjusted (shared coefficient)
    rate = table["exposure_rate"]
    rate = rate.where(rate.between(0, 1, inclusive="neither"))
    logit = np.log(rate / (1 - rate))
    # groups by position: a list of group labels True / False would be read as a row mask
    reference = table.index.get_loc(audit.reference_)
    table["raw_logit_shift"] = logit - logit.iloc[reference]
    shift, shift_se = np.full(len(table), np.nan), np.full(len(table), np.nan)
    shift[reference] = 0.0
    others = shifted_groups(audit)
    if others:
        rows = table.index.get_indexer(others)
        shift[rows], shift_se[rows] = sums["shift"], np.sqrt(np.diag(sums["shift_cov"]))
    table["logit_shift"], table["logit_shift_se"] = shift, shift_se
    table["logit_shift_low"] = table["logit_shift"] - z * table["logit_shift_se"]
    table["logit_shift_high"] = table["logit_shift"] + z * table["logit_shift_se"]
    table["logit_shift_p_value"] = p_value(table["logit_shift"], table["logit_shift_se"])
    return table[[c for c in table.columns if c != "status"] + ["status"]].reset_index()


class _ExposureModel:
    """Logistic exposure model on all items at once, with the estimator's pooled penalties:
    item intercepts, item slopes shrunk toward shared slopes; the last ``n_shared`` columns
    get one coefficient shared by every item (a group's logit shift). Float64 for the SEs."""

    def __init__(self, estimator, item_codes, n_items, reducer=None):
        self.estimator = estimator
        self.reducer = reducer
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
            design, tb, blocks, n_segments=self.n_items, reducer=self.reducer)
        warn_unconverged(self.model_.converged_, np.arange(self.n_items), "audit exposure model")
        self.e_ = design.unpad(self.model_.predict_blocks(design, blocks)).cpu().numpy()
        if n_shared:
            cov = self.model_.shared_covariance(design, tb, blocks, reducer=self.reducer)
            self.shared_tail_ = (self.model_.shared_coef_[-n_shared:], cov[-n_shared:, -n_shared:])
        return self

    def score_variance(self, X, indicator) -> float:
        """Efficient score variance of an indicator column added with coefficient 0: the
        variance of ``sum over its rows of (t - e)`` under the fitted model."""
        design = self._design(np.column_stack([X, indicator]))
        zero = lambda a: torch.cat([a, a.new_zeros(a.shape[:-1] + (1,))], -1)
        fit = self.model_.fit_
        cov = self._model(design.X.shape[-1], 1).shared_covariance(design, design.pad(np.zeros(len(indicator))),
                                        design.blocks(), coef=(zero(fit.shared), zero(fit.local)),
                                        reducer=self.reducer)
        return float(1.0 / cov[-1, -1])
