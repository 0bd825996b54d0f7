"""statsmodels-style summaries: header facts, status counts and one table."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd


class Summary:
    """Rendered as a text table by ``str()`` and as HTML in notebooks."""

    title = ""

    def __init__(self, info: dict, status_counts: pd.Series, table: pd.DataFrame, caption: str):
        self.info, self.status_counts, self.table, self.caption = info, status_counts, table, caption

    def _status_line(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.status_counts.items())

    def __str__(self) -> str:
        width = 78
        lines = ["=" * width, self.title.center(width), "=" * width]
        lines += [f"{k + ':':<34}{v}" for k, v in self.info.items()]
        lines += ["-" * width, "Item status: " + self._status_line(), "-" * width,
                  f"{self.caption} (top {len(self.table)}):"]
        with pd.option_context("display.width", width, "display.max_columns", 20,
                               "display.float_format", "{:.4g}".format):
            lines += [self.table.to_string(), "=" * width]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in self.info.items())
        return (f"<h4>{html.escape(self.title)}</h4><table>{rows}</table>"
                f"<p>Item status: {html.escape(self._status_line())}</p>"
                f"<p>{html.escape(self.caption)}</p>" + self.table.to_html(float_format="{:.4g}".format))


class EffectSummary(Summary):
    """Header facts, an overall (row-weighted) effect and the items with the strongest evidence."""

    title = "Per-item causal effects of recommendation"

    def __init__(self, estimator, top: int = 10):
        eff = estimator.effects_
        ok = eff[eff["status"] == "ok"]
        w = ok["n"] / ok["n"].sum() if len(ok) else ok["n"]
        self.overall = float((w * ok["ate"]).sum()) if len(ok) else np.nan
        self.overall_se = float(np.sqrt((w ** 2 * ok["se"] ** 2).sum())) if len(ok) else np.nan
        nuisance = f"{estimator.nuisance} (outcome: {estimator.outcome_family_})"
        if estimator.nuisance == "pooled":
            nuisance += f", shrinkage {estimator.shrinkage_:g}"
        info = {
            "Method": estimator.method.upper() + (" (normalised weights)" if estimator.method == "aipw"
                                                  and estimator.normalize else ""),
            "Nuisance models": nuisance,
            "Cross-fitting folds": estimator.n_folds,
            "Rows": int(eff["n"].sum()),
            "Items": len(eff),
            "Items estimated (ok)": len(ok),
            "Confounder columns": len(estimator.design_columns_),
            "Propensity clip": estimator.clip,
            "Newton steps (max, incl. chord)": estimator.n_iter_,
            "Items not converged (max_iter)": int((~eff["converged"]).sum()),
            "Dropped columns": ", ".join(estimator.dropped_columns_) or "none",
            "Overall effect (row-weighted)": f"{self.overall:.5g} (se {self.overall_se:.3g})",
        }
        cols = [c for c in ["ate", "se", "ci_low", "ci_high", "p_value", "n", "n_treated",
                            "n_control", "naive_ate"] if c in eff]
        strongest = ok.assign(_z=(ok["ate"] / ok["se"]).abs()).nlargest(top, "_z")
        super().__init__(info, eff["status"].value_counts(),
                         strongest.set_index(estimator._keys())[cols],
                         "Strongest evidence, by |ate / se|")
