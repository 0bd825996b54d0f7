"""Effect disparity tables: per item, one group's effect against the reference's (or the
best- against the worst-served group's), and Benjamini-Hochberg over items."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from ..inference import benjamini_hochberg, critical_value, p_value

__all__ = ["disparity_vs_reference", "disparity_max_min", "add_bh"]


def _segments_of(effects, group):
    return effects.loc[effects["group"] == group].set_index("item")


def disparity_vs_reference(effects, reference, groups, alpha) -> pd.DataFrame:
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
        z = critical_value(alpha, dof)
        status = np.where(ref["status"] != "ok", "reference_" + ref["status"], "ok")
        status = np.where(cur["status"] != "ok", "group_" + cur["status"], status)
        if group_status != "ok":
            status = np.full(len(ref), "group_" + group_status, dtype=object)
        parts.append(pd.DataFrame({
            "item": ref.index, "group": g, "reference": reference,
            "disparity": diff.to_numpy(), "se": se.to_numpy(),
            "ci_low": (diff - z * se).to_numpy(), "ci_high": (diff + z * se).to_numpy(),
            "p_value": p_value(diff.to_numpy(), se.to_numpy(), dof),
            "ate_group": cur["ate"].to_numpy(), "ate_reference": ref["ate"].to_numpy(),
            "n_group": cur["n"].to_numpy(), "n_reference": ref["n"].to_numpy(),
            "status": status}))
    return _blank_failed(pd.concat(parts, ignore_index=True))


def disparity_max_min(effects, groups, alpha) -> pd.DataFrame:
    """Per item: best- minus worst-served group; p-value of the chi-square homogeneity test."""
    audited = [g for g, s in groups.items() if s == "ok"]
    usable = effects[effects["group"].isin(audited) & (effects["status"] == "ok")]
    z = critical_value(alpha)
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


def add_bh(table: pd.DataFrame, fdr: float) -> None:
    """Benjamini-Hochberg q-values over the rows with status "ok"; ``flagged`` = q <= fdr."""
    ok = (table["status"] == "ok").to_numpy() & np.isfinite(table["p_value"].to_numpy(float))
    q = np.full(len(table), np.nan)
    if ok.any():
        q[ok] = benjamini_hochberg(table["p_value"].to_numpy(float)[ok])
    position = table.columns.get_loc("p_value") + 1
    table.insert(position, "q_value", q)
    table.insert(position + 1, "flagged", ok & (q <= fdr))
