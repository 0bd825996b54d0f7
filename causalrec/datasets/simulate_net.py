"""A log with spillover between items: recommending an item takes clicks from its substitutes
(same category) and adds clicks to its complement, with known own, net and pairwise truth."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["NetSimulatedLog", "simulate_net_log"]


@dataclass
class NetSimulatedLog:
    """A simulated log with spillover and its ground truth.

    Attributes
    ----------
    data : one row per (unit, candidate item): ``unit, item, category, z1, z2, match,
        recommended, click``.
    truth : one row per item: ``item, category, true_own, true_net, true_spillover, n``
        (sample averages over the item's rows of the effects in expectation over the unit's
        other recommendations, drawn as the logging policy draws them).
    pair_truth : one row per ordered pair of items that share units: ``item, other,
        true_effect, n`` (effect of recommending ``item`` on ``other``'s clicks).
    row_truth : per row of ``data``: the true ``propensity``; the oracle's outcome
        regressions given the unit's other candidates and recommendations, ``own_mu0,
        own_mu1`` (this row's click) and ``total_mu0, total_mu1`` (the unit's total), with
        this row's recommendation set to 0 / 1.
    roles : keyword arguments for ``estimate_net_effects``.
    params : the settings, and per item ``substitution`` (share of a same-category
        candidate's click probability removed when the item is recommended),
        ``complement`` (lift of its partner's) and ``partner`` (-1 for none).
    """

    data: pd.DataFrame
    truth: pd.DataFrame
    pair_truth: pd.DataFrame
    row_truth: pd.DataFrame
    roles: dict
    params: dict = field(default_factory=dict)

    def oracle(self) -> pd.DataFrame:
        """Per item, a plain AIPW that knows the true propensities and the true outcome
        regressions given the unit's other candidates and recommendations: ``oracle_own``,
        ``oracle_net``, ``oracle_spillover`` (their influence values' difference, row by row)
        and their standard errors (``*_se``)."""
        d, rt = self.data, self.row_truth
        t, e = d["recommended"].to_numpy(), rt["propensity"].to_numpy()
        total = d.groupby("unit")["click"].transform("sum").to_numpy(float)
        aipw = lambda y, m0, m1: m1 - m0 + t / e * (y - m1) - (1 - t) / (1 - e) * (y - m0)
        own = aipw(d["click"].to_numpy(float), rt["own_mu0"].to_numpy(), rt["own_mu1"].to_numpy())
        net = aipw(total, rt["total_mu0"].to_numpy(), rt["total_mu1"].to_numpy())
        grouped = pd.DataFrame({"item": d["item"], "own": own, "net": net,
                                "spillover": net - own}).groupby("item")
        mean, se = grouped.mean(), grouped.std() / np.sqrt(grouped.size().to_numpy()[:, None])
        return mean.join(se.add_suffix("_se")).add_prefix("oracle_").reset_index()


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def simulate_net_log(n_units: int = 20_000, *, n_categories: int = 16, items_per_category: int = 10,
                     candidates_per_category: int = 4, spillover: bool = True,
                     substitute_share: float = 0.5, complement_share: float = 0.15,
                     signal: float = 1.0, seed: int = 0) -> NetSimulatedLog:
    """Simulate units (users, sessions) with candidates clustered by category.

    Categories come in related pairs (2i, 2i + 1); each unit draws one pair and
    ``candidates_per_category`` items from each, so a unit's candidates are substitutes
    within a category and possible complements across the pair. Each candidate is
    recommended independently with a propensity in its own confounders (``z1``, ``match``);
    its click probability is ``(q + own T) * prod_k (1 + G_k T_k)`` over the unit's other
    candidates k: ``G_k = -s_k`` when k is in the same category (a substitute share of items
    has ``s_k`` in [0.15, 0.45]), ``+c_k`` when the item is k's complement partner in the
    paired category (``complement_share`` of items, ``c_k`` in [0.3, 0.6]); 0 otherwise.
    With ``spillover=False`` every G is 0 (net = own). ``signal`` scales the confounders'
    coefficients in ``q`` (how much of the clicks' variance they explain).
    """
    if n_categories % 2:
        raise ValueError("n_categories must be even (categories come in related pairs)")
    if candidates_per_category > items_per_category:
        raise ValueError("candidates_per_category cannot exceed items_per_category")
    rng = np.random.default_rng(seed)
    n_items = n_categories * items_per_category
    category = np.repeat(np.arange(n_categories), items_per_category)
    a_prop, b_base = rng.normal(-0.4, 0.5, n_items), rng.normal(-1.0, 0.5, n_items)
    own = np.where(rng.random(n_items) < 0.3, 0.0, rng.uniform(0.02, 0.12, n_items))
    subst = np.where(rng.random(n_items) < substitute_share, rng.uniform(0.15, 0.45, n_items), 0.0)
    # complements: a partner in the paired category, each item the partner of at most one
    partner = np.full(n_items, -1)
    has_partner = rng.random(n_items) < complement_share
    taken = np.zeros(n_items, dtype=bool)
    for k in np.flatnonzero(has_partner):
        paired = category[k] ^ 1
        free = np.flatnonzero((category == paired) & ~taken)
        if len(free):
            partner[k] = rng.choice(free)
            taken[partner[k]] = True
    compl = np.where(partner >= 0, rng.uniform(0.3, 0.6, n_items), 0.0)
    if not spillover:
        subst[:], compl[:], partner[:] = 0.0, 0.0, -1

    # candidates: one related category pair per unit, candidates_per_category from each
    n_cand = 2 * candidates_per_category
    pair = rng.integers(0, n_categories // 2, n_units)
    picks = np.argsort(rng.random((n_units, 2, items_per_category)), axis=2)[:, :, :candidates_per_category]
    cats = np.stack([2 * pair, 2 * pair + 1], axis=1)
    item = (cats[:, :, None] * items_per_category + picks).reshape(-1)
    unit = np.repeat(np.arange(n_units), n_cand)
    z1, z2 = rng.normal(size=n_units), rng.normal(size=n_units)
    match = rng.normal(size=len(item))
    e = _sigmoid(a_prop[item] + 0.6 * z1[unit] + 0.8 * match)
    t = (rng.random(len(item)) < e).astype(np.int64)
    q = 0.02 + 0.3 * _sigmoid(b_base[item] + signal * (0.5 * z1[unit] - 0.4 * z2[unit] + 0.8 * match))

    # spillover factors, per row: substitution from same-category candidates (per unit and
    # category, minus the row's own term) and the complement from the row's source item
    unit_cat = unit * n_categories + category[item]
    source = np.full(n_items, -1)
    source[partner[partner >= 0]] = np.flatnonzero(partner >= 0)
    row_of = pd.Series(np.arange(len(item)), index=unit * n_items + item)
    src = source[item]
    src_row = np.full(len(item), -1)
    has_src = src >= 0
    src_row[has_src] = row_of.reindex(unit[has_src] * n_items + src[has_src]).fillna(-1).to_numpy(np.int64)
    has_src = src_row >= 0

    def spill_factor(x):  # prod over the other candidates k of (1 + G_k x_k), x = T or e
        log_s = np.log1p(-subst[item] * x)
        by_cat = np.bincount(unit_cat, weights=log_s, minlength=n_units * n_categories)
        log_f = by_cat[unit_cat] - log_s
        log_f[has_src] += np.log1p(compl[src[has_src]] * x[src_row[has_src]])
        return np.exp(log_f)

    p = (q + own[item] * t) * spill_factor(t)
    y = (rng.random(len(item)) < p).astype(np.int64)

    # truth in expectation over the other recommendations (independent given confounders)
    expected_p = (q + own[item] * e) * spill_factor(e.astype(float))
    row_own = own[item] * spill_factor(e.astype(float))
    same_cat_sum = np.bincount(unit_cat, weights=expected_p, minlength=n_units * n_categories)[unit_cat]
    partner_row = _partner_rows(partner, item, unit, n_items, row_of)
    s, c = subst[item], compl[item]
    partner_p = np.where(partner_row >= 0, expected_p[np.maximum(partner_row, 0)], 0.0)
    row_spill = (-(same_cat_sum - expected_p) * s / (1 - s * e) + partner_p * c / (1 + c * e))

    # oracle regressions given the other candidates' recommendations as observed
    own_mu = lambda arm: (q + own[item] * arm) * spill_factor(t) * 1.0
    realized_cat = np.bincount(unit_cat, weights=p, minlength=n_units * n_categories)[unit_cat]
    unit_total = np.bincount(unit, weights=p, minlength=n_units)[unit]
    partner_real = np.where(partner_row >= 0, p[np.maximum(partner_row, 0)], 0.0)

    def total_mu(arm):
        ratio_s = (1 - s * arm) / (1 - s * t) - 1
        ratio_c = (1 + c * arm) / (1 + c * t) - 1
        return own_mu(arm) + (unit_total - p) + (realized_cat - p) * ratio_s + partner_real * ratio_c

    names = np.array([f"i{j:03d}" for j in range(n_items)])
    cat_names = np.array([f"c{j:02d}" for j in range(n_categories)])
    data = pd.DataFrame({"unit": unit, "item": names[item], "category": cat_names[category[item]],
                         "z1": z1[unit], "z2": z2[unit], "match": match,
                         "recommended": t, "click": y})
    row_truth = pd.DataFrame({"propensity": e, "own_mu0": own_mu(0.0), "own_mu1": own_mu(1.0),
                              "total_mu0": total_mu(0.0), "total_mu1": total_mu(1.0),
                              "own": row_own, "spillover": row_spill})
    per_item = pd.DataFrame({"item": data["item"], "own": row_own, "spill": row_spill})
    truth = per_item.groupby("item", sort=True).agg(true_own=("own", "mean"),
                                                    true_spillover=("spill", "mean"),
                                                    n=("own", "size")).reset_index()
    truth["true_net"] = truth["true_own"] + truth["true_spillover"]
    truth.insert(1, "category", cat_names[category[np.searchsorted(names, truth["item"])]])
    truth = truth[["item", "category", "true_own", "true_net", "true_spillover", "n"]]
    params = dict(n_units=n_units, n_categories=n_categories, items_per_category=items_per_category,
                  candidates_per_category=candidates_per_category, spillover=spillover,
                  seed=seed, substitution=dict(zip(names, subst)),
                  complement=dict(zip(names, compl)), partner=dict(zip(names, partner)))
    return NetSimulatedLog(data=data, truth=truth,
                           pair_truth=_pair_truth(unit, item, e, expected_p, subst, compl,
                                                  partner, category, n_cand, names),
                           row_truth=row_truth, params=params,
                           roles=dict(item="item", treatment="recommended", outcome="click",
                                      unit="unit", confounders=["z1", "z2", "match"]))


def _partner_rows(partner, item, unit, n_items, row_of):
    """Row of the row's item's complement partner within the same unit (-1 if none)."""
    out = np.full(len(item), -1)
    has = partner[item] >= 0
    out[has] = row_of.reindex(unit[has] * n_items + partner[item[has]]).fillna(-1).to_numpy(np.int64)
    return out


def _pair_truth(unit, item, e, expected_p, subst, compl, partner, category, n_cand, names):
    """Effect of recommending A on B's clicks, averaged over the units holding both: B's
    expected click probability without A's factor, times A's G on B."""
    # rows come in blocks of n_cand per unit: every ordered pair of a unit's candidates
    a_pos, b_pos = np.nonzero(~np.eye(n_cand, dtype=bool))
    base = np.arange(0, len(item), n_cand)[:, None]
    ra, rb = (base + a_pos).ravel(), (base + b_pos).ravel()
    a, b = item[ra], item[rb]
    g = np.where(category[a] == category[b], -subst[a], 0.0) + np.where(partner[a] == b, compl[a], 0.0)
    effect = expected_p[rb] / (1 + g * e[ra]) * g
    frame = pd.DataFrame({"item": names[a], "other": names[b], "effect": effect})
    return (frame.groupby(["item", "other"], sort=True)
            .agg(true_effect=("effect", "mean"), n=("effect", "size")).reset_index())
