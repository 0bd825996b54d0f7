"""Offline evaluation of per-user recommendation policies on held-out logged rows.

A policy recommends, to each user, the k of the user's logged opportunities (rows) that it
scores highest. Its value is estimated doubly robustly on held-out rows: with cross-fitted
propensities e and outcome models mu0, mu1 of the held-out log itself,

    V(pi) = mean_i [ pi_i G1_i + (1 - pi_i) G0_i ],  G1 = mu1 + t (y - mu1) / e,
                                                   G0 = mu0 + (1 - t)(y - mu0) / (1 - e),

with a normal interval from the rows' spread (the policy is fixed: it was fitted on other
rows). Its *incremental* value over recommending nothing is mean_i pi_i (G1_i - G0_i).

Rows a policy scores alike (the "ate" baseline scores every row of an item alike) are
interchangeable to it, so no row order may choose among them: a tie straddling a user's k-th
slot shares the slots left equally (pi_i = slots left / rows tied, the policy that draws the
tied rows at random), and a tie straddling a curve's cut counts in proportion. The results
depend on the rows' contents only, not on their order or index.

Every compared policy ranks by what its training stage learned, never by the held-out fit:
its nuisances have seen the evaluated rows' outcomes, so a policy ranking by them (the click
baseline once ranked by the held-out mu1) could not have been run and gains from every
improvement of the evaluation fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..estimate.estimator import ItemEffectEstimator
from ..inference import critical_value, p_value
from ..schema import InteractionLog
from ..utils.validation import Integer
from .rows import dr_outcomes, stage1_options

__all__ = ["evaluate_policy", "PolicyEvaluation", "BASELINES"]

BASELINES = ("click", "ate", "logging")


@dataclass
class PolicyEvaluation:
    """Result of ``evaluate_policy``.

    values : per policy: n_recommended (the recommendations' total weight: rows tied at a
        user's k-th slot share it), value (DR mean outcome per row), se, ci_low, ci_high,
        incremental (value minus the value of recommending nothing) with its se and interval,
        causal_precision (mean DR effect of a user's recommended rows, tied rows weighted by
        their share, averaged over users: Sato et al.'s causal precision@k) with its se, and
        true_value / true_incremental when the truth was given.
    differences : the uplift policy minus each other policy (paired over rows): difference,
        se, ci_low, ci_high, p_value.
    curve : uplift (Qini) curve per scored policy: treating the top ``fraction`` of rows by the
        policy's score, the DR incremental outcome per row (``gain``; ``true_gain`` with truth);
        a tie straddling the cut counts in proportion of its rows treated.
    """

    values: pd.DataFrame
    differences: pd.DataFrame
    curve: pd.DataFrame
    k: int
    n_rows: int
    n_excluded: int

    def to_html(self) -> str:
        from .report import policy_section
        return policy_section(self)


def evaluate_policy(log: InteractionLog, policy, k: int = 10, baselines=BASELINES, *,
                    user: str | None = None, truth=None, alpha: float = 0.05,
                    n_points: int = 21, estimator_options: dict | None = None) -> PolicyEvaluation:
    """Compare "top-k per user by uplift" (``policy``, a fitted ``UpliftModel``) with
    baselines on a held-out ``log``: "click" (top-k by the expected outcome under
    recommendation, the policy's ``response``: a click model fitted on its training rows),
    "ate" (top-k by the item's average effect, as the policy's stage-1 estimator estimated
    it), "logging" (the logged recommendations).

    user : the user column (default: the log's ``user`` role). truth : optional per-row true
        expected outcomes (columns ``mu0``, ``mu1``, aligned with ``log.data``) for the
        true values. estimator_options : options of the held-out nuisance fits (default:
        the policy's own, which keeps rows of every item with both arms).
    Rows of items the policy cannot score, or without nuisance predictions, are left out
    (counted in ``n_excluded``).
    """
    if not isinstance(log, InteractionLog):
        raise TypeError("evaluate_policy expects an InteractionLog")
    if not Integer(1, None).is_satisfied_by(k):  # True is not a k
        raise ValueError(f"k must be a positive integer, got {k!r}")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"baselines must be among {BASELINES}, got {unknown}")
    user = log.user if user is None else user
    if user is None or user not in log.data.columns:
        raise ValueError("evaluate_policy needs a user column: pass user= or set the log's user role")
    df = log.data
    options = stage1_options(dict(getattr(policy, "estimator_options", {})))
    options.update(min_rows_per_arm=1)
    options.update(estimator_options or {})
    est = ItemEffectEstimator(**options).fit(log)
    e, mu0, mu1 = (s.to_numpy() for s in (est.propensity_, est.mu0_, est.mu1_))
    known = policy.items_.get_indexer(df[policy.item_column_]) >= 0
    keep = np.isfinite(e) & np.isfinite(mu0) & np.isfinite(mu1) & known
    rows = df[keep]
    t, y = rows[log.treatment].to_numpy(float), rows[log.outcome].to_numpy(float)
    e, mu0, mu1 = e[keep], mu0[keep], mu1[keep]
    g1, g0 = dr_outcomes(t, y, e, mu0, mu1)
    users = pd.factorize(rows[user])[0]

    uplift = policy.effect(rows).to_numpy()
    ate = policy.heterogeneity_.set_index("item")["estimator_ate"]
    scores = {"uplift": uplift}
    if "click" in baselines:
        scores["click"] = policy.response(rows).to_numpy()
    if "ate" in baselines:
        scores["ate"] = ate.reindex(rows[policy.item_column_]).to_numpy()
    chosen = {name: _top_k_per_user(users, s, k) for name, s in scores.items()}
    if "logging" in baselines:
        chosen["logging"] = t  # the logged 0/1 recommendations as weights

    true = None
    if truth is not None:
        truth = pd.DataFrame(truth, index=df.index) if not isinstance(truth, pd.DataFrame) else truth
        true = truth.loc[rows.index, ["mu0", "mu1"]].to_numpy(float)
    z = critical_value(alpha)
    table = pd.DataFrame([_values(name, pi, g1, g0, users, z, true) for name, pi in chosen.items()])
    diffs = pd.DataFrame([_difference(name, chosen["uplift"], pi, g1, g0, z)
                          for name, pi in chosen.items() if name != "uplift"])
    curve = pd.concat([_curve(name, s, g1 - g0, n_points, None if true is None else true[:, 1] - true[:, 0])
                       for name, s in scores.items()], ignore_index=True)
    return PolicyEvaluation(table, diffs, curve, int(k), int(keep.sum()), int((~keep).sum()))


def _top_k_per_user(users, score, k) -> np.ndarray:
    """Each row's weight in its user's top k: 1 on the k highest-scoring rows, 0 below, and
    rows tied across the k-th slot share the slots left equally, so no row order picks among
    them (NaN scores tie last)."""
    desc = -np.nan_to_num(score, nan=-np.inf)
    order = np.lexsort((desc, users))
    sorted_users, sorted_desc = users[order], desc[order]
    new_user = np.ones(len(order), dtype=bool)
    new_user[1:] = sorted_users[1:] != sorted_users[:-1]
    new_tie = new_user.copy()
    new_tie[1:] |= sorted_desc[1:] != sorted_desc[:-1]
    position = np.arange(len(order))
    user_start = np.maximum.accumulate(np.where(new_user, position, 0))
    starts = np.flatnonzero(new_tie)
    sizes = np.diff(np.r_[starts, len(order)])
    above = starts - user_start[starts]  # the user's rows ranked above the tie
    share = np.clip(k - above, 0, sizes) / sizes
    out = np.empty(len(score))
    out[order] = share[np.cumsum(new_tie) - 1]
    return out


def _mean_se(values):
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def _values(name, pi, g1, g0, users, z, true) -> dict:
    # pi is each row's recommendation weight (fractional for tied rows): pi * g1 + (1 - pi) * g0
    # is the value of recommending it with that probability, and exactly g1 or g0 otherwise
    value, se = _mean_se(pi * g1 + (1 - pi) * g0)
    incremental, inc_se = _mean_se(pi * (g1 - g0))
    # causal precision@k: per user, the weighted mean DR effect of the rows recommended to them
    on = pi > 0
    weighted = pd.DataFrame({"effect": (pi * (g1 - g0))[on], "weight": pi[on]})
    weighted = weighted.groupby(users[on]).sum()
    per_user = weighted["effect"] / weighted["weight"]
    precision, precision_se = _mean_se(per_user.to_numpy()) if len(per_user) > 1 else (np.nan, np.nan)
    out = dict(policy=name, n_recommended=int(round(pi.sum())), value=value, se=se,
               ci_low=value - z * se, ci_high=value + z * se, incremental=incremental,
               incremental_se=inc_se, incremental_ci_low=incremental - z * inc_se,
               incremental_ci_high=incremental + z * inc_se, causal_precision=precision,
               causal_precision_se=precision_se)
    if true is not None:
        out["true_value"] = float((pi * true[:, 1] + (1 - pi) * true[:, 0]).mean())
        out["true_incremental"] = float((pi * (true[:, 1] - true[:, 0])).mean())
    return out


def _difference(name, pi_a, pi_b, g1, g0, z) -> dict:
    diff, se = _mean_se((pi_a.astype(float) - pi_b) * (g1 - g0))
    return dict(versus=name, difference=diff, se=se, ci_low=diff - z * se, ci_high=diff + z * se,
                p_value=p_value(diff, se) if se > 0 else np.nan)


def _curve(name, score, effect, n_points, true_effect) -> pd.DataFrame:
    desc = -np.nan_to_num(score, nan=-np.inf)
    order = np.argsort(desc, kind="stable")
    sorted_desc = desc[order]
    # the cumulative sums are order-free at the ends of ties only; a cut inside a tie treats
    # that share of its rows, i.e. interpolates linearly between the tie's ends
    ends = np.r_[0, np.flatnonzero(sorted_desc[1:] != sorted_desc[:-1]) + 1, len(order)]
    fraction = np.linspace(0, 1, n_points)
    cut = np.round(fraction * len(order)).astype(int)

    def gain(values):
        cumulative = np.r_[0.0, np.cumsum(values[order])]
        return np.interp(cut, ends, cumulative[ends]) / len(order)

    out = pd.DataFrame({"policy": name, "fraction": fraction, "gain": gain(effect)})
    if true_effect is not None:
        out["true_gain"] = gain(true_effect)
    return out
