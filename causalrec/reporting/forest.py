"""Forest plots of the largest and smallest effects: raw and shrunk estimates in two panels,
each on its own scale, so that shrinkage does not flatten the chosen items together."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .html import escape, figure_to_img, html_table, mpl_label, new_figure, paragraph

__all__ = ["forest_html"]

_MORE, _LESS, _OTHER = "#1a7f37", "#b42318", "#6e7781"


def forest_html(ok: pd.DataFrame, labels: pd.Series, top: int, more, less, keys) -> str:
    """``ok``: the ranked items; ``more`` / ``less``: index labels of the items the first
    screen recommends more / less (drawn in colour)."""
    if not len(ok):
        return paragraph("No item has a usable estimate.", "warn")
    shrunk = "posterior_low" in ok.columns
    score = "posterior_mean" if shrunk else "ate"
    ordered = ok.sort_values(score, ascending=False, kind="stable")
    chosen = ordered if len(ordered) <= 2 * top else pd.concat([ordered.head(top),
                                                               ordered.tail(top)])
    colours = [(_MORE if i in set(more) else _LESS if i in set(less) else _OTHER)
               for i in chosen.index]
    panels = [("ate", "ci_low", "ci_high", "raw estimate (the item alone), 95% CI")]
    if shrunk:
        panels.append(("posterior_mean", "posterior_low", "posterior_high",
                       "shrunk (empirical Bayes), 95% interval"))
    fig = new_figure(4.2 * len(panels) + 1.6, 1.0 + 0.26 * len(chosen))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    y = np.arange(len(chosen))[::-1].astype(float)
    for ax, (mid, low, high, title) in zip(axes, panels):
        centre = chosen[mid].to_numpy(float)
        lo = np.maximum(centre - chosen[low].to_numpy(float), 0)
        hi = np.maximum(chosen[high].to_numpy(float) - centre, 0)
        for colour in dict.fromkeys(colours):  # one artist per colour (fast to draw)
            rows = np.array([c == colour for c in colours])
            ax.errorbar(centre[rows], y[rows], xerr=[lo[rows], hi[rows]], fmt="o",
                        color=colour, ms=4, capsize=2)
        ax.axvline(0, color="black", lw=0.8)
        if len(ordered) > 2 * top:
            ax.axhline(top - 0.5, color="#bbbbbb", ls="--", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("effect of recommending")
        ax.grid(axis="x", color="#eeeeee")
    axes[0].set_yticks(y, [mpl_label(v) for v in labels.loc[chosen.index]], fontsize=8)
    caption = (f"The {min(top, len(ordered))} items with the largest and smallest "
               f"{'shrunk' if shrunk else 'raw'} effects; each panel has its own scale. "
               "Green: recommend more, red: recommend less (the first screen's choice), grey: "
               "the others. Shrinkage pools each item with all items, pulling noisy small "
               "items towards the middle.")
    cols = [c for c in keys + ["posterior_mean", "posterior_low", "posterior_high", "ate",
                               "ci_low", "ci_high", "prob_positive", "n", "rank"]
            if c in chosen.columns]
    return (f"<figure>{figure_to_img(fig, 'forest plot of item effects')}"
            f"<figcaption>{escape(caption)}</figcaption></figure>"
            + html_table(chosen[cols], caption="The items in the plot"))
