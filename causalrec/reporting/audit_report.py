"""The fairness audit as a self-contained HTML page, in the effect report's style."""
from __future__ import annotations

import numpy as np

from .html import (escape, facts_table, figure_to_img, html_page, html_table, mpl_label,
                   new_figure, paragraph, section)

__all__ = ["audit_html"]


def audit_html(audit) -> str:
    """The audit page, built from the effect report's shared helpers (same look)."""
    parts = [("Summary", "summary", _summary_section(audit)),
             ("Effect disparity", "effects", _effects_section(audit)),
             ("Exposure disparity", "exposure", _exposure_section(audit)),
             ("Exposure versus benefit", "benefit", _benefit_section(audit)),
             ("Outcome metrics by group", "metrics", _metrics_section(audit)),
             ("How to read this audit", "method", _method_section(audit))]
    links = "".join(f'<li><a href="#{a}">{escape(t)}</a></li>' for t, a, _ in parts)
    nav = f"<nav><ul>{links}</ul></nav>"
    body = nav + "".join(section(t, content, a) for t, a, content in parts)
    subtitle = (f"Groups in column {audit.group!r}; effect of recommending each item on "
                f"{audit.outcome!r}, and who gets recommended")
    return html_page("Fairness audit of recommendations", body, subtitle)


def _figure(fig, alt, caption) -> str:
    return (f"<figure>{figure_to_img(fig, alt)}<figcaption>{escape(caption)}"
            "</figcaption></figure>")


def _summary_section(audit) -> str:
    text = ("For every item and user group the audit estimates the causal effect of "
            "recommending the item (AIPW, adjusted for the confounders), compares groups, "
            "and asks whether each group is recommended as often as users like them and in "
            "proportion to the benefit it would get.")
    return (paragraph(text) + facts_table(audit.summary().info, caption="Headline numbers")
            + html_table(audit.groups_, index=True, caption="Groups"))


def _effects_section(audit) -> str:
    d = audit.disparity_
    ok = d[d["status"] == "ok"]
    out = html_table(audit.overall_disparity_, caption="Overall disparity, weighted by the "
                                                         "items' rows in the compared groups")
    if len(ok):
        shown = ok.assign(_z=(ok["disparity"] / ok["se"]).abs()).nlargest(25, "_z")
        shown = shown.sort_values("disparity", kind="stable")
        fig = new_figure(7.5, 1.2 + 0.26 * len(shown))
        ax = fig.subplots()
        y = np.arange(len(shown), dtype=float)
        for flag, color, label in ((False, "#888888", "not flagged"),
                                   (True, "#b42318", f"flagged (BH, FDR {audit.fdr:g})")):
            part = shown["flagged"].to_numpy() == flag
            if part.any():
                s = shown[part]
                ax.errorbar(s["disparity"], y[part], xerr=[s["disparity"] - s["ci_low"],
                                                            s["ci_high"] - s["disparity"]],
                            fmt="o", ms=4, capsize=2, color=color, label=label)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [mpl_label(f"{i} ({g})") for i, g in zip(shown["item"], shown["group"])],
                      fontsize=8)
        ax.set_xlabel("effect in group minus effect in reference group")
        ax.legend(fontsize=8, loc="lower right")
        out += _figure(fig, "per-item effect disparity",
                       "Items with the strongest evidence of a disparity (largest |disparity / "
                       "se|), with their confidence intervals.")
    else:
        out += paragraph("No item could be compared between groups.", "warn")
    ordered = d.sort_values(["flagged", "p_value"], ascending=[False, True], kind="stable")
    out += html_table(ordered, max_rows=40, caption="Per-item disparity (strongest first)")
    not_ok = audit.group_effects_[audit.group_effects_["status"] != "ok"]
    if len(not_ok):
        counts = not_ok.groupby(["group", "status"]).size().rename("segments").reset_index()
        out += html_table(counts, caption="Item x group segments without a usable estimate")
    cols = ["item", "group", "ate", "se", "ci_low", "ci_high", "n", "n_treated", "status"]
    return out + html_table(audit.group_effects_[cols], max_rows=40,
                             caption="Effects per item and group")


def _exposure_section(audit) -> str:
    e = audit.exposure_
    fig = new_figure(7.0, 3.2)
    ax = fig.subplots()
    x = np.arange(len(e), dtype=float)
    ax.bar(x - 0.2, e["exposure_rate"], 0.4, color="#0b5cad", label="observed")
    ax.bar(x + 0.2, e["expected_rate"], 0.4, color="#bbbbbb", label="expected for users like them")
    ax.set_xticks(x, [mpl_label(g) for g in e["group"]])
    ax.set_ylabel("share of opportunities recommended")
    ax.legend(fontsize=8)
    caption = ("Observed exposure rate per group next to the rate the exposure model (fitted "
               "without the group) predicts for the same users, items and contexts.")
    cols = ["group", "n", "n_treated", "exposure_rate", "expected_rate", "exposure_ratio",
            "ratio_low", "ratio_high", "raw_logit_shift", "logit_shift", "logit_shift_low",
            "logit_shift_high", "logit_shift_p_value", "status"]
    return (_figure(fig, "exposure by group", caption)
            + html_table(e[cols], caption="Exposure by group"))


def _share_figure(table, key, title):
    fig = new_figure(7.0, 3.2)
    ax = fig.subplots()
    x = np.arange(len(table), dtype=float)
    ax.bar(x - 0.2, table["exposure_share"], 0.4, color="#0b5cad", label="share of recommendations")
    ax.bar(x + 0.2, table["uplift_share"], 0.4, color="#2da44e", label="share of causal uplift")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [mpl_label(v, 14) for v in table[key]], fontsize=8,
                  rotation=30 if len(table) > 6 else 0)
    ax.legend(fontsize=8)
    return _figure(fig, title, f"{title}: a ratio above 1 means more exposure than the "
                               "group's share of the benefit.")


def _benefit_section(audit) -> str:
    text = ("Uplift of a group is the summed estimated effect over its opportunities "
            "(rows x effect), on the items every audited group can estimate; its share is "
            "compared with the group's share of the recommendations on the same items.")
    out = paragraph(text) + _share_figure(audit.benefit_, "group",
                                           "Exposure versus uplift per group")
    out += html_table(audit.benefit_, caption="Exposure versus benefit per group")
    if audit.providers_ is not None:
        out += _share_figure(audit.providers_, "provider", "Exposure versus uplift per provider")
        out += html_table(audit.providers_,
                           caption=f"Exposure versus benefit per {audit.provider}")
    return out


def _metrics_section(audit) -> str:
    return (paragraph("Descriptive rates by group (fairlearn MetricFrame). Outcome rates with "
                       "and without a recommendation are not causal effects: recommended rows "
                       "differ from the others.")
            + html_table(audit.metrics, index=True, caption="Rates by group"))


def _method_section(audit) -> str:
    notes = [
        "Effects per item and group come from one cross-fitted AIPW pass with segments item "
        "x group; a difference between groups uses the two segments' independent standard "
        "errors. Benjamini-Hochberg controls the share of false flags among flagged items.",
        "The overall disparity weights each item by its rows in the two compared groups.",
        "Compare = 'max-min': gaps between the best- and worst-served groups are selected, "
        "so their intervals are too narrow and the overall gap is biased upward; the p-value "
        "is the chi-square test that all groups' effects are equal.",
        "The exposure ratio compares observed exposure with the exposure a model without the "
        "group predicts for the same users, items and contexts (a score test of the group "
        "indicator). The logit shift is the group's coefficient in the same model with the "
        "group added (shared by all items); it is conditional on the confounders, so it "
        "differs from the raw logit shift even when the group is independent of them.",
        "Exposure versus benefit: the uplift share has a delta-method interval; the ratio's "
        "interval divides the exposure share by its ends, so it is unbounded when the uplift "
        "share may be zero.",
        "Segments and groups without enough rows are reported with their status, never dropped.",
    ]
    return "<ul class=\"plain\">" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"
