"""A statsmodels-style summary of fitted item effects."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd


class EffectSummary:
    """Header facts, an overall (row-weighted) effect and the items with the strongest evidence.

    ``str(summary)`` gives a text table; notebooks render ``_repr_html_``.
    """

    def __init__(self, estimator, top: int = 10):
        eff = estimator.effects_
        ok = eff[eff["status"] == "ok"]
        w = ok["n"] / ok["n"].sum() if len(ok) else ok["n"]
        overall = float((w * ok["ate"]).sum()) if len(ok) else np.nan
        overall_se = float(np.sqrt((w ** 2 * ok["se"] ** 2).sum())) if len(ok) else np.nan
        self.info = {
            "Method": estimator.method.upper(),
            "Nuisance models": f"{estimator.nuisance} (outcome: {estimator.outcome_family_})"
                               + (f", shrinkage {estimator.shrinkage_:g}" if estimator.nuisance == "pooled" else ""),
            "Cross-fitting folds": estimator.n_folds,
            "Rows": int(eff["n"].sum()),
            "Items": len(eff),
            "Items estimated (ok)": len(ok),
            "Confounder columns": len(estimator.design_columns_),
            "Propensity clip": estimator.clip,
            "Newton iterations (max)": estimator.n_iter_,
            "Overall effect (row-weighted)": f"{overall:.5g} (se {overall_se:.3g})",
        }
        self.overall, self.overall_se = overall, overall_se
        self.status_counts = eff["status"].value_counts()
        cols = [c for c in ["ate", "se", "ci_low", "ci_high", "p_value", "n", "n_treated",
                            "n_control", "naive_ate"] if c in eff]
        keys = estimator._keys()
        strongest = ok.assign(_z=(ok["ate"] / ok["se"]).abs()).nlargest(top, "_z")
        self.table = strongest.set_index(keys)[cols]

    def __str__(self) -> str:
        width = 78
        lines = ["=" * width, "Per-item causal effects of recommendation".center(width), "=" * width]
        lines += [f"{k + ':':<34}{v}" for k, v in self.info.items()]
        lines += ["-" * width, "Item status: " + ", ".join(f"{k} {v}" for k, v in self.status_counts.items()),
                  "-" * width, f"Strongest evidence (top {len(self.table)} by |ate / se|):"]
        with pd.option_context("display.width", width, "display.max_columns", 20,
                               "display.float_format", "{:.4g}".format):
            lines += [self.table.to_string(), "=" * width]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in self.info.items())
        status = html.escape(", ".join(f"{k} {v}" for k, v in self.status_counts.items()))
        return (f"<table>{rows}</table><p>Item status: {status}</p>"
                + self.table.to_html(float_format="{:.4g}".format))
