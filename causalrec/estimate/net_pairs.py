"""Pairwise spillover: for the items with the largest |spillover|, the effect of recommending
item A on each other item B's outcome (or on a category's total), with intervals and
Benjamini-Hochberg control of the false discovery rate; and ``score_table``, the item-effects
scores of a summed outcome, which the net fit (``causalrec.estimate.net``) uses as well. This
module reads a fitted ``NetEffectEstimator`` and sits below it (the estimator's
``spillover_pairs`` calls ``pair_effects``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..inference import benjamini_hochberg
from ..schema import SchemaError
from .scores import effects_table, pre_status

__all__ = ["check_pair_settings", "pair_effects", "score_table"]


def check_pair_settings(top, fdr) -> None:
    """``ValueError`` for an ``fdr`` outside (0, 1) or a ``top`` that is no positive integer."""
    if not 0 < fdr < 1:
        raise ValueError(f"fdr must lie in (0, 1), got {fdr}")
    if int(top) != top or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")


def pair_effects(source, top: int = 10, category: str | None = None, fdr: float = 0.1,
                 min_rows_per_arm: int | None = None) -> pd.DataFrame:
    """The pairs of a fitted ``NetEffectEstimator`` ``source`` (see
    ``causalrec.estimate.net.spillover_pairs`` for the parameters and the table)."""
    check_pair_settings(top, fdr)
    source._check_is_fitted("effects_")
    est, rows = source.item_estimator_, source._rows
    log = est.log_
    effects = source.effects_
    ok = (effects["status"] == "ok").to_numpy() & np.isfinite(effects["spillover"].to_numpy())
    chosen = np.flatnonzero(ok)[np.argsort(-np.abs(effects["spillover"].to_numpy()[ok]),
                                           kind="stable")][:int(top)]
    seg, units = rows["seg"], source._units
    if category is None:
        group, group_names = seg, effects["item"].to_numpy()
    else:
        group, group_names = _category_codes(log.data, category, seg, len(effects))
    pair = _pair_rows(units, seg, rows["use"], chosen)
    a_row, b_row = pair
    # one estimate row per (A's row, B's group): B's outcomes and adjustments summed
    position = np.full(len(effects), -1)
    position[chosen] = np.arange(len(chosen))
    key = position[seg[a_row]] * len(group_names) + group[b_row]
    cell, cell_of = np.unique(a_row * len(group_names) + group[b_row], return_inverse=True)
    y = np.bincount(cell_of, weights=rows["y"][b_row])
    m = np.bincount(cell_of, weights=rows["m_obs"][b_row])
    a_of_cell = cell // len(group_names)
    pair_key = np.zeros(len(cell), dtype=np.int64)
    pair_key[cell_of] = key
    pair_ids, pair_of = np.unique(pair_key, return_inverse=True)
    t = rows["t"][a_of_cell]
    n_pairs = len(pair_ids)
    n_t = np.bincount(pair_of, weights=t, minlength=n_pairs).astype(np.int64)
    n_all = np.bincount(pair_of, minlength=n_pairs)
    status = pre_status(n_t, n_all - n_t, min_rows_per_arm or est.min_rows_per_arm)
    tested = (status == "ok")[pair_of]
    table = score_table(est, seg=pair_of[tested], t=t[tested], y=y[tested], e=rows["e"][a_of_cell][tested],
                        mu0=m[tested], mu1=m[tested], folds=rows["folds"][a_of_cell][tested],
                        n_seg=n_pairs)
    out = pd.DataFrame({
        "item": effects["item"].to_numpy()[chosen][pair_ids // len(group_names)],
        "other": group_names[pair_ids % len(group_names)],
        "effect": table["ate"].to_numpy(), "se": table["se"].to_numpy(),
        "ci_low": table["ci_low"].to_numpy(), "ci_high": table["ci_high"].to_numpy(),
        "p_value": table["p_value"].to_numpy(),
    })
    untested = status != "ok"
    out.loc[untested, ["effect", "se", "ci_low", "ci_high", "p_value"]] = np.nan
    out["q_value"] = benjamini_hochberg(out["p_value"].to_numpy())
    out["flagged"] = (out["q_value"] <= fdr).to_numpy()
    out["n"], out["n_treated"], out["n_control"] = n_all, n_t, n_all - n_t
    out["status"] = status
    rank = {name: i for i, name in enumerate(effects["item"].to_numpy()[chosen])}
    out = out.sort_values(["item", "effect"], key=lambda c: c.map(rank) if c.name == "item" else c,
                          kind="stable").reset_index(drop=True)
    out.attrs.update(fdr=fdr, grouped_by=category, top=[*rank])
    return out


def score_table(est, seg, t, y, e, mu0, mu1, folds, n_seg) -> pd.DataFrame:
    """The item-effects scores (``effects_table``) of another outcome on the same rows, with
    the fitted ``ItemEffectEstimator`` ``est``'s propensities and inference settings (not
    binary: sums of rows)."""
    as_float = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)
    table, _, _ = effects_table(torch.as_tensor(seg, dtype=torch.long), as_float(t), as_float(y),
                                as_float(e), as_float(mu0), as_float(mu1), n_seg, est.method,
                                est.clip, est.trim, est.alpha, binary=False,
                                normalize=est.normalize, folds=torch.as_tensor(folds))
    return table


def _category_codes(df, column, seg, n_items):
    """Category code per row and the category names; the column must be constant per item."""
    if column not in df.columns:
        raise SchemaError(column, "missing from the log (category)")
    codes, names = pd.factorize(df[column], sort=True)
    if (codes < 0).any():
        raise SchemaError(column, "missing category values")
    per_item = pd.DataFrame({"seg": seg, "c": codes}).groupby("seg")["c"].nunique()
    if (per_item > 1).any():
        raise SchemaError(column, "a category must be constant within each item")
    return codes.astype(np.int64), np.asarray(names, dtype=object)


def _pair_rows(units, seg, use, chosen):
    """(A's row, B's row) for every row of a chosen item A in use and every other row of
    the same unit."""
    is_chosen = np.zeros(seg.max() + 1, dtype=bool)
    is_chosen[chosen] = True
    a_rows = np.flatnonzero(is_chosen[seg] & use)
    order = np.argsort(units, kind="stable")
    counts = np.bincount(units)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    size = counts[units[a_rows]]
    a = np.repeat(a_rows, size)
    offset = np.arange(len(a)) - np.repeat(np.cumsum(size) - size, size)
    b = order[np.repeat(starts[units[a_rows]], size) + offset]
    keep = a != b
    return a[keep], b[keep]
