"""From out-of-fold nuisance predictions to per-item estimates: influence values (AIPW,
Hajek IPW, outcome regression), standard errors, intervals, and each item's status."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from ..glm.layout import segment_sum
from ..inference import interval, p_value
from ..utils.tensors import at_rows
from .positivity import ONE_ARM_MAX

__all__ = ["effects_table", "clip_bounds", "unit_pairs", "pre_status", "split_status",
           "post_status", "NO_ESTIMATE", "STATUSES", "PRIOR_DOF", "CLIP_BASE_SHARE"]

# weight of the fitted-probability variance in a binary normalised AIPW's variance, in
# degrees of freedom of HC3 (measured plateau 8-15 on the benchmark logs: session 9)
PRIOR_DOF = 12.0

# an item's outcome values that differ by at most this many units in the last place of
# their magnitude are one value written twice (0.1 + 0.2 against 0.3): "constant_outcome"
CONSTANT_ULPS = 4

# the clip never binds closer than 1 / CLIP_BASE_SHARE times an arm's base weight: an item
# recommended to 0.5% of users has propensities near 0.005, and the absolute clip 0.01 would
# move every one of them (a randomised 0.5% item was "no_overlap"; at 1% it clipped 15% of
# the rows toward weights half the true ones); items with both arms above 10% keep ``clip``
CLIP_BASE_SHARE = 0.1

# statuses for which no estimate is formed: numbers are NaN ("too_few_units": the item's own
# models never predict out of fold, ``split_status``)
NO_ESTIMATE = ("no_treated", "no_control", "too_few_rows", "too_few_units")
# no overlap: the arms' fitted propensities barely share a range, so the "effect" would be an
# extrapolation of the nuisance models; numbers are NaN (their diagnostics are kept)
NO_OVERLAP = "no_overlap"
STATUSES = ("ok",) + NO_ESTIMATE + (NO_OVERLAP, "poor_overlap", "constant_outcome", "fit_failed")


def pre_status(n_t, n_c, min_rows):
    status = np.full(len(n_t), "ok", dtype=object)
    status[(n_t < min_rows) | (n_c < min_rows)] = "too_few_rows"
    status[n_c == 0] = "no_control"
    status[n_t == 0] = "no_treated"
    return status


def split_status(status, folds_filled):
    """"too_few_units" for the "ok" items whose fitted rows fill fewer than two folds of
    some cross-fitting split (``folds_filled``: per item, the fewest folds any split's rows
    fill), for a nuisance with models of the item's own (``FitPlan.own_models_out_of_fold``):
    the own models that predict those rows are fitted on none of the item's rows, so the
    "estimate" would be its unadjusted difference. Unit folds do this to an item whose rows
    come from one unit, or from a few that hash to one fold (given folds can too). Pooled
    and flexible nuisances predict such rows from models fitted on the other items' rows
    (shared slopes and intercept; an own booster needs the item's rows in every fold), so
    their items keep "ok"."""
    status = status.copy()
    status[(status == "ok") & (np.asarray(folds_filled) < 2)] = "too_few_units"
    return status


def post_status(status, table, min_ess, max_clipped=0.3):
    """Statuses that need the fit: "no_overlap" when more than ``max_clipped`` of an item's
    rows have a clipped propensity, when the arms' propensity ranges do not meet, or when
    more than ``ONE_ARM_MAX`` of its rows lie in levels of a categorical confounder that one
    arm never reaches (``share_one_arm_strata``, ``causalrec.estimate.positivity``);
    "poor_overlap" when an arm's effective sample size is below ``min_ess``;
    "constant_outcome" when the item's outcome takes one value on all its rows, both arms
    (``outcome_sd`` 0, see ``effects_table``): its effect is 0 by construction, with no
    interval. An outcome constant within one arm only is estimated as usual: that arm's
    mean is known exactly and the interval comes from the other arm and the models."""
    status = status.copy()
    ok = status == "ok"
    one_arm = table.get("share_one_arm_strata", pd.Series(0.0, index=table.index)).to_numpy()
    status[ok & (one_arm > ONE_ARM_MAX)] = NO_OVERLAP
    ok = status == "ok"
    disjoint = ((table["e_max_control"] < table["e_min_treated"])
                | (table["e_max_treated"] < table["e_min_control"])).to_numpy()
    status[ok & (disjoint | ~(table["share_clipped"].to_numpy() <= max_clipped))] = NO_OVERLAP
    ok = status == "ok"
    poor = ok & ~(np.minimum(table["ess_treated"], table["ess_control"]) >= min_ess)
    status[poor] = "poor_overlap"
    constant = ok & (table["outcome_sd"].to_numpy() == 0)
    status[constant] = "constant_outcome"
    status[(status == "ok") & ~np.isfinite(table["ate"].to_numpy())] = "fit_failed"
    return status


def effects_table(seg, t, y, e, mu0, mu1, n_seg, method, clip, trim, alpha, binary,
                   normalize=True, folds=None, held_out=None, held_out_folds=None,
                   estimand="population", units=None):
    """Per-row influence values and per-item estimates, in float64 on the tensors' device
    (row arrays stay where the fits ran; only per-item numbers and two row arrays come back).
    Returns the per-item table and, as numpy, psi and the clipped propensities.

    The normalised AIPW (``normalize=True``) normalises the residual weights within each
    (item, cross-fitting fold) when ``folds`` (one integer per row) is given: each fold's
    nuisances come from their own fit, so each fold's mean residual is removed with its own
    weights. Intervals use Student t with Welch-Satterthwaite degrees of freedom over the
    arms (see benchmarks/README.md, issue 14 part 3, for the rules measured); a binary
    normalised AIPW moderates HC3 with the fitted-probability variance (``PRIOR_DOF``).

    ``held_out`` = (e, mu0, mu1): leave-one-out nuisances of the same rows when (e, mu0,
    mu1) were fitted on every row (small logs: ``refit_small_logs``; each model's approximate
    leave-one-out predictions on the rows it was fitted on, ``SegmentGLM.loo_predict_blocks``).
    The estimate is then the all-rows fit's and its variance (se, dof, interval, p-value)
    that of the same table formed from ``held_out``, normalised per item (one fit: no folds), or per
    (item, fold) of ``held_out_folds`` where ``held_out`` is out of fold (flexible nuisances).
    In-sample residuals are shrunk by the fit (IHDP-A stacked: coverage 0.91); the
    out-of-fold fits' residuals (session 32) are those of models fitted on half the rows:
    intervals 1.8x the oracle's, coverage 0.99 (benchmarks/README.md, session 33).

    ``units`` (``unit_pairs`` of the rows' items and units, or None): the variance counts
    each unit's rows in an item as one draw (``_unit_design_effect``)."""
    S = lambda values: segment_sum(values, seg, n_seg)
    # t and folds may come in a narrow integer dtype (memory: 10 MB instead of 80 MB a
    # column at 10M rows): products with float64 rows are float64 and exact; sums of t alone
    # are taken in float64
    t_sum = lambda values: S(values.to(e.dtype))
    n_t, n_c = t_sum(t), t_sum(1 - t)
    e_clip = _clipped(e, seg, n_t, n_c, clip)
    keep = torch.ones_like(e, dtype=torch.bool) if trim is None else (e >= trim) & (e <= 1 - trim)
    k = keep.to(e.dtype)
    wt, wc = k * t / e_clip, k * (1 - t) / (1 - e_clip)
    n_keep = S(k)
    s1, s0 = S(wt), S(wc)  # each arm's weight sum
    # (a row array, formed where it is used: not alive beside the normalised scores' arrays)
    correction = lambda: wt * (y - mu1) - wc * (y - mu0)
    psi_var = None  # normalised AIPW: influence values with HC3 residuals, for the variance
    if method == "aipw" and normalize:
        psi, psi_var, omega_t, omega_c, *_ = _normalised_scores(seg, folds, k, wt, wc, y, mu0, mu1, n_seg)
        arm_weights = (omega_t, omega_c)
    elif method == "aipw":
        psi, arm_weights = mu1 - mu0 + correction(), (wt, wc)
    elif method == "ipw":  # Hajek: weighted arm means, i.e. normalised AIPW without outcome model
        # per item, not per fold: the fold split matters through the outcome models' residuals
        hajek = _normalised_scores(seg, None, k, wt, wc, y, 0.0, 0.0, n_seg)
        psi, m1, m0 = hajek.psi, hajek.r_t, hajek.r_c
    else:  # outcome regression; spread by the AIPW influence function, centred on OR
        c = correction()
        psi = mu1 - mu0 + c - at_rows(S(k * c) / n_keep, seg)
        arm_weights = (wt, wc)
        del c
    if trim is not None:  # (every row kept otherwise: no masked copies)
        psi = torch.where(keep, psi, 0.0)
    ate = S(psi) / n_keep
    normalised = psi_var is not None
    if not normalised:
        psi_var = psi
    conditional = estimand == "conditional"
    if conditional:  # the effect's spread over the rows' confounders is not error here
        psi_var = psi_var - (mu1 - mu0)
    if trim is not None and (normalised or conditional):
        psi_var = torch.where(keep, psi_var, 0.0)
    var_of_mean = _variance_of_mean(psi_var, seg, n_seg, n_keep)
    # (a continuous normalised AIPW's variance is its own: taking the larger of it and the
    # textbook AIPW's made IHDP intervals 1.1-1.5x wider, covering 100% (issue 28); the
    # per-fold normalisation already removes the outcome models' fold-level misfit,
    # tests/estimate/test_scores_folds.py)
    ess_t, ess_c = s1 ** 2 / S(wt ** 2), s0 ** 2 / S(wc ** 2)
    dof_welch = _welch_dof(psi_var, seg, t * k, (1 - t) * k, ess_t, ess_c, n_seg, n_keep)
    if binary:
        # An arm with no (or only) clicks shows no residual spread, so the empirical
        # variance collapses; the variance implied by the fitted click probabilities
        # does not. Those items take the larger of the two.
        events_t, events_c = S(t * y), S((1 - t) * y)
        degenerate = ((events_t == 0) | (events_t == n_t) | (events_c == 0) | (events_c == n_c))
        if method == "ipw":
            r1 = mu1 * (1 - mu1) + (mu1 - at_rows(m1, seg)) ** 2
            r0 = mu0 * (1 - mu0) + (mu0 - at_rows(m0, seg)) ** 2
            model = S(wt ** 2 * r1) / s1 ** 2 + S(wc ** 2 * r0) / s0 ** 2
        else:
            omega_t, omega_c = arm_weights  # each row's weight in its arm's mean, times n
            spread = ((0.0 if conditional else k * (mu1 - mu0 - at_rows(ate, seg)) ** 2)
                      + omega_t ** 2 * mu1 * (1 - mu1)
                      + omega_c ** 2 * mu0 * (1 - mu0))
            model = S(spread) / n_keep ** 2
        if normalised:
            # Every item, not only those without clicks: an arm's sandwich variance comes
            # from its own few clicks, so it is small exactly when the arm's clicks (and
            # with them the estimate's error) fall short (Wald's problem for a binomial
            # rate: placebo items with an SE under the oracle's were 60% "significant").
            # The out-of-fold fitted probabilities do not depend on those clicks but miss
            # the outcome model's misfit, which the sandwich keeps. Moderated variance
            # (Smyth 2004): HC3 as a chi^2 estimate whose degrees of freedom d follow from
            # the fitted probabilities (Var of a Bernoulli squared residual: p(1-p)(1-2p)^2),
            # the fitted-probability variance as a prior worth PRIOR_DOF of them; t on
            # PRIOR_DOF + d. (The larger of the two was conservative: session 9.)
            fourth = S(omega_t ** 4 * mu1 * (1 - mu1) * (1 - 2 * mu1) ** 2
                       + omega_c ** 4 * mu0 * (1 - mu0) * (1 - 2 * mu0) ** 2)
            d = 2 * S(spread) ** 2 / fourth
            usable = torch.isfinite(d)
            d = torch.where(usable, d, 0.0)
            var_of_mean = torch.where(usable, (PRIOR_DOF * model + d * var_of_mean)
                                      / (PRIOR_DOF + d), var_of_mean)
            dof_welch = torch.where(usable, PRIOR_DOF + d, dof_welch)
        if method != "ipw":
            # The fitted probabilities of an arm without clicks are themselves near 0, so
            # the model variance collapses too (placebo: 88% of such items "significant").
            # Floor: both arms' Bernoulli variance at the rate without an effect,
            # e mu1 + (1 - e) mu0, with the weights each arm's mean uses.
            rate = e_clip * mu1 + (1 - e_clip) * mu0
            n_row = at_rows(n_keep, seg)
            null = ((omega_t / n_row) ** 2 + (omega_c / n_row) ** 2) * rate * (1 - rate)
            model = torch.fmax(model, S(null))
        var_of_mean = torch.where(degenerate, torch.fmax(var_of_mean, model), var_of_mean)
    if units is not None:
        inflation, n_units = _unit_design_effect(psi_var, seg, *units, k, n_seg, n_keep)
        var_of_mean = var_of_mean * inflation
        dof_welch = torch.where(n_units > 1, torch.fmin(dof_welch, n_units - 1), dof_welch)
    n_all = n_t + n_c
    y_sd, y_constant = _outcome_spread(y, seg, n_seg, n_all, S)
    per_item = {  # float64 numpy from here on
        "ate": ate, "se": var_of_mean.sqrt(), "n_t": n_t, "n_c": n_c,
        "treated_mean": S(t * y) / n_t, "control_mean": S((1 - t) * y) / n_c,
        "y_sd": y_sd, "y_constant": y_constant,
        "ess_treated": ess_t, "ess_control": ess_c, "dof": dof_welch,
        "mu0_mean": S(mu0) / n_all,
        "e_min": e.new_full((n_seg,), float("inf")).scatter_reduce_(0, seg, e, "amin"),
        "e_max": e.new_full((n_seg,), float("-inf")).scatter_reduce_(0, seg, e, "amax"),
        "n_clipped": S((e != e_clip).to(e.dtype)), "n_trimmed": S(1 - k),
        **_support(seg, t, e, n_seg, S),
    }
    v = {name: values.cpu().numpy() for name, values in per_item.items()}
    constant = v["y_constant"]
    # a constant outcome has no effect: 0 exactly, not the nuisance fits' rounding
    ate, se, empty = np.where(constant, 0.0, v["ate"]), v["se"], v["n_t"] + v["n_c"] == 0
    # Student t: IPW-weighted influence values are heavy-tailed, and with a few dozen rows in
    # an arm a normal interval is too short; Welch-Satterthwaite degrees of freedom (the
    # smaller arm's rows - 1 where they are not finite, e.g. an arm without spread)
    dof = np.where(np.isfinite(v["dof"]), np.maximum(v["dof"], 1),
                   np.maximum(np.minimum(v["n_t"], v["n_c"]) - 1, 1))
    ci_low, ci_high = interval(ate, se, alpha, dof)
    outcome_sd = np.where(constant, 0.0, v["y_sd"])
    table = pd.DataFrame({
        "ate": ate, "se": se, "ci_low": ci_low, "ci_high": ci_high,
        "p_value": p_value(ate, se, dof), "dof": dof,
        "naive_ate": np.where(constant, 0.0, v["treated_mean"] - v["control_mean"]),
        "treated_mean": v["treated_mean"], "control_mean": v["control_mean"],
        "mu0_mean": v["mu0_mean"], "outcome_sd": outcome_sd,
        "e_min": np.where(empty, np.nan, v["e_min"]), "e_max": np.where(empty, np.nan, v["e_max"]),
        "ess_treated": v["ess_treated"], "ess_control": v["ess_control"],
        "n_clipped": v["n_clipped"].astype(np.int64), "n_trimmed": v["n_trimmed"].astype(np.int64),
        "share_clipped": v["n_clipped"] / np.maximum(v["n_t"] + v["n_c"], 1),
        **{name: np.where(empty, np.nan, v[name]) for name in _SUPPORT},
    })
    if held_out is not None:
        honest = effects_table(seg, t, y, *held_out, n_seg, method, clip, trim, alpha, binary,
                               normalize, held_out_folds, estimand=estimand, units=units)[0]
        table["se"], table["dof"] = honest["se"].to_numpy(), honest["dof"].to_numpy()
        table["ci_low"], table["ci_high"] = interval(table["ate"].to_numpy(), table["se"].to_numpy(),
                                                     alpha, table["dof"].to_numpy())
        table["p_value"] = p_value(table["ate"].to_numpy(), table["se"].to_numpy(),
                                   table["dof"].to_numpy())
    return table, psi.cpu().numpy(), e_clip.cpu().numpy()


def _outcome_spread(y, seg, n_seg, n, S):
    """Per item: the outcome's population sd and whether its rows' values are all equal up to
    ``CONSTANT_ULPS`` units in their last place (judged against the values' own magnitude:
    an offset of 1e9 on a 0/1 outcome is not constant). The sd is two-pass: deviations from
    the item's mean (taken on values divided by their largest magnitude: no overflow), then
    their corrected second moment, again divided by their largest magnitude: no cancellation
    at any offset, no overflow or underflow at any scale."""
    inf = float("inf")
    amax = lambda values: values.new_full((n_seg,), -inf).scatter_reduce_(0, seg, values, "amax")
    low = -amax(-y)
    high = amax(y)
    usable = lambda m: torch.where((m > 0) & torch.isfinite(m), m, 1.0)
    m = usable(torch.fmax(low.abs(), high.abs()))
    dev = y - at_rows(m * S(y / at_rows(m, seg)) / n, seg)
    md = usable(amax(dev.abs()))
    dev = dev / at_rows(md, seg)
    var = (S(dev * dev) / n - (S(dev) / n) ** 2).clamp(min=0)
    constant = (n > 0) & ((high - low) <= CONSTANT_ULPS * torch.finfo(torch.float64).eps * m)
    return md * var.sqrt(), constant


_SUPPORT = ("e_min_treated", "e_max_treated", "e_min_control", "e_max_control",
            "share_outside_support")


def clip_bounds(share_treated, clip):
    """Per item, the (low, high) propensity bounds: [clip, 1 - clip], each side moved toward
    its end where the arm's share of the item's rows is under 10% (``CLIP_BASE_SHARE``)."""
    share = np.asarray(share_treated, np.float64)
    return (np.minimum(clip, CLIP_BASE_SHARE * share),
            1 - np.minimum(clip, CLIP_BASE_SHARE * (1 - share)))


def _clipped(e, seg, n_t, n_c, clip):
    """``e`` clamped into its item's ``clip_bounds`` (the share from the item's own rows,
    ``n_t`` treated of ``n_t + n_c``: a shard or Spark partition holds whole items)."""
    share = (n_t / (n_t + n_c).clamp(min=1)).cpu().numpy()
    low, high = (at_rows(torch.as_tensor(b, dtype=e.dtype, device=e.device), seg)
                 for b in clip_bounds(share, clip))
    return torch.minimum(torch.maximum(e, low), high)


def _support(seg, t, e, n_seg, S):
    """Each arm's propensity range and the share of rows outside the range both arms share
    (all rows when the ranges are disjoint, as under a deterministic logging policy)."""
    inf = float("inf")
    treated = t > 0.5
    amin = lambda mask: e.new_full((n_seg,), inf).scatter_reduce_(0, seg, torch.where(mask, e, inf), "amin")
    amax = lambda mask: e.new_full((n_seg,), -inf).scatter_reduce_(0, seg, torch.where(mask, e, -inf), "amax")
    out = {"e_min_treated": amin(treated), "e_max_treated": amax(treated),
           "e_min_control": amin(~treated), "e_max_control": amax(~treated)}
    low = at_rows(torch.fmax(out["e_min_treated"], out["e_min_control"]), seg)
    high = at_rows(torch.fmin(out["e_max_treated"], out["e_max_control"]), seg)
    n = S(torch.ones_like(e)).clamp(min=1)
    out["share_outside_support"] = S(((e < low) | (e > high)).to(e.dtype)) / n
    return out


class _Normalised(NamedTuple):
    psi: torch.Tensor       # influence values (their item mean is the estimate)
    psi_hc3: torch.Tensor   # the same with HC3 residuals, for the variance
    omega_t: torch.Tensor   # each row's weight in the estimate's treated-arm mean, times n
    omega_c: torch.Tensor
    r_t: torch.Tensor       # per item: the arms' weighted mean residuals (normalisation
    r_c: torch.Tensor       # groups averaged with their rows' shares)


def _normalised_scores(seg, folds, k, wt, wc, y, mu0, mu1, n_seg):
    """Influence values of mean(mu1 - mu0) + each arm's weighted mean residual, with the
    weights normalised within a group: (item, fold) when ``folds`` is given and every fold of
    the item holds at least two of the arm's kept rows, else the item. Linearised in the
    groups' weight sums: a row of group g adds n_g w (res - r_g) / s_g to the item's sum."""
    n = segment_sum(k, seg, n_seg)
    psi, psi_hc3, omegas, means = mu1 - mu0, mu1 - mu0, [], []
    for sign, w, mu in ((1.0, wt, mu1), (-1.0, wc, mu0)):
        group, n_groups = _arm_groups(seg, folds, k, w, n_seg)
        G = lambda values: segment_sum(values, group, n_groups)
        s, n_g = G(w), G(k)
        r = G(w * (y - mu)) / s
        omega = at_rows(n_g, group) * w / at_rows(s, group)
        # in place, the same operations in the same order as psi + sign * (r_g + omega * resid),
        # each row array freed once read (psi starts as a fresh mu1 - mu0, or the number 0.0)
        r_g = at_rows(r, group)
        weighted = omega * torch.where(w > 0, y - mu - r_g, 0.0)  # omega * resid
        omegas.append(torch.where(w > 0, omega, 0.0))
        del omega
        term = torch.add(weighted, r_g).mul_(sign)
        psi = psi.add_(term) if torch.is_tensor(psi) else psi + term
        del term
        h = (w / at_rows(s, group)).nan_to_num(0.0)  # leverage: the row's share of its group's weight
        term = weighted.div_((1 - h).clamp(min=1e-12)).add_(r_g).mul_(sign)
        del h, r_g
        psi_hc3 = psi_hc3.add_(term) if torch.is_tensor(psi_hc3) else psi_hc3 + term
        del weighted, term
        means.append(segment_sum(k * at_rows(r, group), seg, n_seg) / n)
    return _Normalised(psi, psi_hc3, *omegas, *means)


def _arm_groups(seg, folds, k, w, n_seg):
    """Normalisation group of each row for one arm (weights ``w``): its (item, fold), or its
    item where a fold of the item has fewer than two of the arm's rows (one row's weight
    normalised alone leaves no residual, hence no variance)."""
    if folds is None or not len(seg):
        return seg, n_seg
    n_folds = int(folds.max()) + 1
    sub = seg * n_folds + folds
    n_sub = n_seg * n_folds
    rows_sub = segment_sum(k, sub, n_sub)
    arm_sub = segment_sum((w > 0).to(w.dtype), sub, n_sub)
    short = ((rows_sub > 0) & (arm_sub < 2)).to(w.dtype)
    item_of_sub = torch.arange(n_sub, device=seg.device) // n_folds
    whole_item = segment_sum(short, item_of_sub, n_seg) > 0
    return torch.where(at_rows(whole_item, seg), n_sub + seg, sub), n_sub + n_seg


def _welch_dof(psi, seg, in_t, in_c, ess_t, ess_c, n_seg, n):
    """Welch-Satterthwaite degrees of freedom of the variance of the mean of ``psi``: its
    squared deviations summed per arm, each arm's sum with (its Kish effective size - 1)
    degrees of freedom (a few dominant weights leave few)."""
    mean = segment_sum(psi, seg, n_seg) / n
    dev = (psi - at_rows(mean, seg)) ** 2
    v1, v0 = segment_sum(in_t * dev, seg, n_seg), segment_sum(in_c * dev, seg, n_seg)
    nu1, nu0 = (ess_t - 1).clamp(min=1), (ess_c - 1).clamp(min=1)
    return (v1 + v0) ** 2 / (v1 ** 2 / nu1 + v0 ** 2 / nu0)


def unit_pairs(seg, units):
    """(each row's (item, unit) pair, each pair's item) for ``effects_table``'s ``units``:
    ``units`` one integer code per row (the log's ``unit``). Formed once per shard: the
    pairs do not depend on the split."""
    width = int(units.max()) + 1 if len(units) else 1
    pairs, pair = torch.unique(seg * width + units, return_inverse=True)
    return pair, pairs // width


def _unit_design_effect(psi, seg, pair, pair_item, k, n_seg, n):
    """Per item: the variance of the mean of ``psi`` with each unit's kept rows summed into
    one draw (cluster-robust, G / (G - 1) over its G units) over that with each row a draw,
    at least 1; and G. A unit shown the same item many times, the policy's choice fixed for
    the pair, repeats its affinity for the item in every row: rows as draws covered 0.60-0.70
    (tests/estimate/test_unit_variance.py). Rows of distinct units: exactly 1. An item of one
    unit keeps its rows as draws (the unit's own effect: no spread between units to read)."""
    n_pairs = len(pair_item)
    dev = k * (psi - at_rows(segment_sum(psi, seg, n_seg) / n, seg))
    g = segment_sum((segment_sum(k, pair, n_pairs) > 0).to(psi.dtype), pair_item, n_seg)
    by_unit = segment_sum(segment_sum(dev, pair, n_pairs) ** 2, pair_item, n_seg) * g / (g - 1)
    by_row = segment_sum(dev ** 2, seg, n_seg) * n / (n - 1)
    ratio = torch.where((g > 1) & (by_row > 0), by_unit / by_row, 1.0)
    return ratio.nan_to_num(1.0).clamp(min=1.0), g


def _variance_of_mean(psi, seg, n_seg, n):
    mean = segment_sum(psi, seg, n_seg) / n
    var = (segment_sum(psi ** 2, seg, n_seg) - n * mean ** 2) / (n - 1)
    return var.clamp(min=0) / n
