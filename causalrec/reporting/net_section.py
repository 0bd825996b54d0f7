"""The report's section "own versus net": does recommending an item add to the unit's total
engagement, or move it from the unit's other items? (``causalrec.estimate.net``)"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .html import escape, figure_to_img, html_table, mpl_label, new_figure, paragraph

__all__ = ["net_html"]

_TEXT = ("The own effect of an item is what recommending it does to its own outcome; the net "
         "effect is what it does to the unit's total outcome, the unit's other "
         "recommendations drawn as the logging policy draws them given the confounders. The "
         "spillover (net minus own) is negative when the item takes engagement from the "
         "unit's other items (cannibalisation) and positive when it adds to them. Its "
         "interval comes from one influence value per unit and item for both effects, so it "
         "accounts for their covariance. An item with a strong own effect and a net effect "
         "near zero moves engagement around rather than adding it.")


def net_html(net, top: int = 10, fdr: float = 0.1) -> str:
    """The section's HTML from a fitted ``NetEffectEstimator`` (with the top cannibalising
    pairs) or its effects table (without them)."""
    effects = net.effects_ if hasattr(net, "effects_") else net
    if not isinstance(effects, pd.DataFrame) or "net_ate" not in effects.columns:
        raise TypeError("net must be a fitted NetEffectEstimator or the table of "
                        "estimate_net_effects")
    ok = effects[(effects["status"] == "ok") & np.isfinite(effects["net_ate"].astype(float))]
    if not len(ok):
        return paragraph("No item has a usable net estimate.", "warn")
    out = paragraph(_TEXT) + _scatter(ok)
    below = ok[ok["spillover_ci_high"] < 0].sort_values("spillover", kind="stable")
    cols = ["item", "own_ate", "own_ci_low", "own_ci_high", "net_ate", "net_ci_low",
            "net_ci_high", "spillover", "spillover_ci_low", "spillover_ci_high", "n"]
    if len(below):
        out += html_table(below[cols].head(top), caption=(
            f"Net clearly below own: the {min(top, len(below))} items (of {len(below)}) with "
            "the most negative spillover whose spillover interval lies below 0"))
    else:
        out += paragraph("No item's net effect is clearly below its own effect (no spillover "
                         "interval lies below 0).")
    if hasattr(net, "spillover_pairs"):
        pairs = net.spillover_pairs(top=top, fdr=fdr)
        losses = pairs[pairs["flagged"] & (pairs["effect"] < 0)].sort_values("effect", kind="stable")
        if len(losses):
            out += html_table(losses[["item", "other", "effect", "ci_low", "ci_high", "q_value",
                                      "n"]].head(2 * top), caption=(
                f"Top cannibalising pairs: recommending 'item' lowers 'other''s outcome "
                f"(Benjamini-Hochberg at {fdr:g} over the pairs of the {top} items with the "
                "largest |spillover|; chosen on the same data, so their sizes lean away from 0)"))
        else:
            out += paragraph(f"No pair of the {top} items with the largest |spillover| is "
                             f"flagged as cannibalising at a false discovery rate of {fdr:g}.")
    return out


def _scatter(ok: pd.DataFrame) -> str:
    fig = new_figure(6.0, 5.0)
    ax = fig.subplots()
    below = (ok["spillover_ci_high"] < 0).to_numpy()
    for mask, color, label in ((~below, "#888888", "items"),
                               (below, "#c0392b", "net clearly below own")):
        part = ok[mask]
        if len(part):
            ax.errorbar(part["own_ate"], part["net_ate"],
                        xerr=[part["own_ate"] - part["own_ci_low"], part["own_ci_high"] - part["own_ate"]],
                        yerr=[part["net_ate"] - part["net_ci_low"], part["net_ci_high"] - part["net_ate"]],
                        fmt="o", ms=3, lw=0.6, alpha=0.6, color=color, label=label)
    low = float(np.nanmin(ok[["own_ci_low", "net_ci_low"]].to_numpy()))
    high = float(np.nanmax(ok[["own_ci_high", "net_ci_high"]].to_numpy()))
    ax.plot([low, high], [low, high], color="black", lw=0.8, label="net = own")
    ax.axhline(0, color="#bbbbbb", lw=0.6)
    worst = ok.nsmallest(3, "spillover")
    for _, row in worst.iterrows():
        ax.annotate(mpl_label(row["item"], 16), (row["own_ate"], row["net_ate"]), fontsize=7)
    ax.set_xlabel("own effect (on the item's outcome)")
    ax.set_ylabel("net effect (on the unit's total)")
    ax.legend(fontsize=8, loc="upper left")
    caption = ("Own against net effect per item, with 95% intervals. Below the diagonal the "
               "item takes from the unit's other items; red: the spillover interval lies "
               "below 0.")
    return (f"<figure>{figure_to_img(fig, 'own versus net effects')}"
            f"<figcaption>{escape(caption)}</figcaption></figure>")
