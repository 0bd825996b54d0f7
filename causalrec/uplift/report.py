"""HTML report sections for per-user effects: the policy comparison, the uplift curve and
the items whose effect varies most, with their drivers."""
from __future__ import annotations

from ..utils.html import figure_to_img, html_page, html_table, new_figure, paragraph, section

__all__ = ["policy_section", "heterogeneity_section", "uplift_report"]


def policy_section(evaluation) -> str:
    values = evaluation.values
    shown = [c for c in ("policy", "n_recommended", "value", "ci_low", "ci_high", "incremental",
                         "incremental_ci_low", "incremental_ci_high", "causal_precision",
                         "true_value", "true_incremental") if c in values.columns]
    body = paragraph(f"Top-{evaluation.k} recommendations per user among their logged "
                      f"opportunities, valued doubly robustly on {evaluation.n_rows} held-out rows "
                      f"({evaluation.n_excluded} rows left out: items the model cannot score or "
                      f"without nuisance predictions).")
    body += html_table(values[shown], caption="Policy values (per row)")
    body += html_table(evaluation.differences, caption="Uplift policy minus each other policy")
    fig = new_figure(6.5, 3.8)
    ax = fig.add_subplot()
    for name, part in evaluation.curve.groupby("policy", sort=False):
        ax.plot(part["fraction"], part["gain"], label=str(name))
    ax.plot([0, 1], [0, evaluation.curve["gain"].iloc[-1]], color="grey", ls=":", label="random")
    ax.set_xlabel("fraction of rows recommended (best-scored first)")
    ax.set_ylabel("DR incremental outcome per row")
    ax.legend()
    body += figure_to_img(fig, alt="uplift (Qini) curve")
    return section("Per-user policies", body, anchor="uplift-policies")


def heterogeneity_section(model, top: int = 10) -> str:
    het = model.heterogeneity_
    n_tested = int(het["p_value"].notna().sum())
    body = paragraph(f"{int(het['heterogeneous'].sum())} of {n_tested} items show an effect that "
                      f"varies with the user features (Wald test per item, Benjamini-Hochberg at "
                      f"{model.fdr}). Chosen shrinkage (local, shared): {model.shrinkage_}.")
    body += html_table(model.summary(top).table, caption="Strongest heterogeneity and its main driver")
    return section("Effect heterogeneity", body, anchor="uplift-heterogeneity")


def uplift_report(model, evaluation=None, title: str = "Per-user causal recommendations") -> str:
    """A self-contained HTML page with the sections above."""
    body = heterogeneity_section(model)
    if evaluation is not None:
        body = evaluation.to_html() + body
    return html_page(title, body)
