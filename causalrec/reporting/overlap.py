"""Overlap: one verdict per item from the estimator's own rule and columns, and the report
section that shows it (text, table and plot all read ``overlap_verdict``)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..estimate.positivity import ONE_ARM_MAX
from .html import escape, figure_to_img, format_number, html_table, new_figure, paragraph

__all__ = ["overlap_verdict", "OVERLAP_VERDICTS", "DEFAULT_MAX_OUTSIDE"]

# ItemEffectEstimator's default max_clipped: the share of an item's rows beyond which its
# overlap is called into question (used when only an effects table is given)
DEFAULT_MAX_OUTSIDE = 0.3

OVERLAP_VERDICTS = {
    "no_overlap": "the arms' propensities (nearly) do not meet: no estimate",
    "poor_overlap": "an arm's effective sample size is below min_ess: not ranked",
    "limited": "more than {share} of the rows lie outside the propensity range both arms "
               "share: the estimate leans on the models' extrapolation there",
    "adequate": "both arms cover the item's propensity range",
    "": "not estimated for another reason",
}


def overlap_verdict(table: pd.DataFrame, max_outside: float = DEFAULT_MAX_OUTSIDE) -> pd.Series:
    """Per item: "no_overlap" / "poor_overlap" (the estimator's status), "limited" (status
    ok but ``share_outside_support`` above ``max_outside``, the estimator's ``max_clipped``)
    or "adequate"; "" for items not estimated for another reason."""
    status = table["status"] if "status" in table.columns else pd.Series("ok", index=table.index)
    verdict = pd.Series("", index=table.index, dtype=object)
    verdict[status.isin(["no_overlap", "poor_overlap"])] = status
    ok = status == "ok"
    if "share_outside_support" in table.columns:
        outside = table["share_outside_support"].astype(float) > max_outside
        verdict[ok & outside] = "limited"
        verdict[ok & ~outside] = "adequate"
    else:
        verdict[ok] = "adequate"
    return verdict


def overlap_html(table, keys, labels, verdict, max_outside, rows) -> str:
    """The overlap section. ``rows``: (propensity, treated, per-row verdict) or None."""
    share = f"{max_outside:.0%}"
    counts = verdict[verdict != ""].value_counts()
    n_ok = int((table["status"] == "ok").sum()) if "status" in table.columns else len(table)
    text = ("An item's effect can only be learned where users could plausibly have been shown "
            "it and plausibly not. The estimator's rule: items whose arms' propensity ranges "
            "do not meet (or with more than " + share + " of rows clipped, or more than "
            f"{ONE_ARM_MAX:.0%} of rows in a level of a categorical confounder one arm never "
            "reaches) get no estimate ('no_overlap'); items with an arm's effective sample size below min_ess are not "
            "ranked ('poor_overlap'); estimated items with more than " + share + " of their "
            "rows outside the range both arms share are marked 'limited' here.")
    out = paragraph(text)
    lines = [f"{counts.get('limited', 0)} of the {n_ok} estimated ('ok') items have limited "
             f"overlap (more than {share} of their rows outside the shared propensity range)",
             f"{counts.get('poor_overlap', 0)} item(s) are flagged 'poor_overlap' and "
             f"{counts.get('no_overlap', 0)} 'no_overlap'"]
    out += paragraph("; ".join(lines) + ".", "warn" if counts.get("limited", 0)
                     or counts.get("poor_overlap", 0) or counts.get("no_overlap", 0) else None)
    if rows is not None:
        out += _overlap_figure(*rows)
    flagged = table[verdict.isin(["no_overlap", "poor_overlap", "limited"])]
    if len(flagged):
        cols = [c for c in keys + ["status", "n", "n_treated", "n_control",
                                   "share_outside_support", "ess_treated", "ess_control",
                                   "share_clipped", "share_one_arm_strata"]
                if c in flagged.columns]
        shown = flagged[cols].assign(overlap=verdict[flagged.index])
        if "share_outside_support" in shown.columns:
            shown = shown.sort_values("share_outside_support", ascending=False, kind="stable")
        out += html_table(shown, max_rows=40,
                          caption=f"Items with overlap problems ({len(flagged)} items)")
    return out


def _overlap_figure(propensity, treated, row_verdict) -> str:
    finite = np.isfinite(propensity)
    panels = [("all rows", finite)]
    for name, verdicts in (("items with limited overlap", ["limited"]),
                           ("items flagged poor/no overlap", ["poor_overlap", "no_overlap"])):
        rows = finite & np.isin(row_verdict, verdicts)
        if rows.any():
            panels.append((name, rows))
    fig = new_figure(3.6 * len(panels), 3.0)
    bins = np.linspace(0, 1, 41)
    for ax, (name, rows) in zip(np.atleast_1d(fig.subplots(1, len(panels), sharex=True)), panels):
        for arm, colour, label in ((1, "#c44e52", "recommended"), (0, "#4c72b0", "not recommended")):
            values = propensity[rows & (treated == arm)]
            if len(values):
                ax.hist(values, bins=bins, density=True, alpha=0.55, color=colour,
                        label=f"{label} ({format_number(len(values))})")
        ax.set_xlabel("propensity of being recommended")
        ax.set_ylabel("density")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    caption = ("Propensity distributions by arm, for all rows and for the rows of the items "
               "counted above. Good overlap: both colours spread over the same range.")
    return (f"<figure>{figure_to_img(fig, 'propensity distributions by arm')}"
            f"<figcaption>{escape(caption)}</figcaption></figure>")
