"""The sections of the effect report (``EffectReport`` renders them in this order)."""
from __future__ import annotations

import hashlib
import inspect
import platform
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from .html import (escape, facts_table, figure_to_img, html_table, mpl_label, new_figure,
                   paragraph, png_to_img)

_POLICY_NAMES = {
    "causal_top_k": "top k by causal effect (posterior mean)",
    "naive_top_k": "top k by naive click rate",
    "logging": "what the logging policy did",
}


class EffectSections:
    """The report's HTML sections; mixed into ``EffectReport``, which prepares ``_table``,
    ``_keys``, ``_roles``, ``_data``, ``_estimator``, ``_policies`` and ``_notes``."""

    def _item_label(self, frame: pd.DataFrame) -> pd.Series:
        labels = frame[self._keys[0]].astype(str)
        for key in self._keys[1:]:
            labels = labels + " / " + frame[key].astype(str)
        return labels

    def _ok(self) -> pd.DataFrame:
        t = self._table
        ok = t["status"] == "ok" if "status" in t.columns else pd.Series(True, index=t.index)
        return t[ok & np.isfinite(t["ate"].astype(float)) & np.isfinite(t["se"].astype(float))]

    def _summary_html(self) -> str:
        t, ok = self._table, self._ok()
        cards = {"items": len(t), "items estimated (ok)": len(ok)}
        if "n" in t.columns:
            cards["rows analysed"] = f"{int(t['n'].sum()):,}"
        if "bh_positive" in t.columns:
            cards["items that help (FDR 10%)"] = int(t["bh_positive"].sum())
            cards["items that hurt (FDR 10%)"] = int(t["bh_negative"].sum())
        html_cards = "".join(f'<div class="card"><div class="value">{escape(v)}</div>'
                             f'<div class="label">{escape(k)}</div></div>'
                             for k, v in cards.items())
        text = ("Each item's effect is the average change in the outcome caused by recommending "
                "it, compared with not recommending it, to the users and contexts in which it "
                "was a candidate. Raw estimates are adjusted for confounding; shrunk "
                "(empirical-Bayes) estimates also pool information across items, which "
                "tempers the noisy extremes of small items. Use the shrunk values to rank.")
        out = f'<div class="cards">{html_cards}</div>' + paragraph(text)
        if self._estimator is not None:
            out += facts_table(self._estimator.summary().info, caption="Estimation")
        return out + "".join(paragraph(note, "warn") for note in self._notes)

    def _data_html(self) -> str:
        out = ""
        if self._data is not None:
            data, roles = self._data, self._roles
            facts = {"rows": f"{len(data):,}", "columns": data.shape[1]}
            if "item" in roles:
                facts["items"] = f"{data[roles['item'][0]].nunique():,}"
            if "user" in roles:
                facts["users"] = f"{data[roles['user'][0]].nunique():,}"
            if "treatment" in roles:
                treated = data[roles["treatment"][0]].astype(float)
                facts["share recommended"] = float(treated.mean())
                if "outcome" in roles:
                    y = data[roles["outcome"][0]].astype(float)
                    facts["mean outcome, recommended"] = float(y[treated == 1].mean())
                    facts["mean outcome, not recommended"] = float(y[treated == 0].mean())
            out += facts_table(facts, caption="The log")
            if roles:
                frame = pd.DataFrame({"role": list(roles),
                                      "columns": [", ".join(map(str, c)) for c in roles.values()]})
                out += html_table(frame, caption="Column roles")
        else:
            out += paragraph("No log was given: the figures below come from the effects table.",
                              "note")
        t = self._table
        if "status" in t.columns:
            counts = t["status"].value_counts().rename_axis("status").reset_index(name="items")
            out += html_table(counts, caption="Item status (anything but 'ok' is not ranked)")
        if "n" in t.columns:
            n = t["n"].astype(float)
            facts = {"min": n.min(), "median": n.median(), "max": n.max()}
            out += facts_table({k: f"{v:,.0f}" for k, v in facts.items()},
                                caption="Rows per item (few items carry most rows)")
        return out

    def _graph_html(self) -> str:
        adjusted = [c for role in ("confounders", "categorical", "text")
                    for c in self._roles.get(role, [])]
        used = (paragraph("Adjusted for: " + ", ".join(map(str, adjusted)) + ".")
                if adjusted else "")
        if self.graph is None:
            return used + paragraph("No causal graph was given.", "note")
        from ..identify import NotIdentifiableError

        out = ""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.graph.draw(Path(tmp) / "graph.png")
                out += png_to_img(Path(path).read_bytes(), "causal graph")
        except (ValueError, OSError) as exc:
            out += paragraph(f"The graph could not be drawn: {exc}", "warn")
        try:
            adjustment = self.graph.adjustment_set()
            out += paragraph("Backdoor adjustment set implied by the graph: "
                              + (", ".join(adjustment) or "(empty)") + ".")
        except NotIdentifiableError as exc:
            out += paragraph(str(exc), "warn")
        out += used
        if hasattr(self.graph, "summary"):
            out += html_table(self.graph.summary(), caption="Nodes")
        return out

    def _overlap_html(self) -> str:
        t = self._table
        text = ("An item's effect can only be learned where users could plausibly have been "
                "shown it and plausibly not: propensities near 0 or 1 leave one arm empty, "
                "a few rows get huge weights and the estimate becomes fragile. The effective "
                "sample size (ESS) per arm counts how many rows the weights are really worth; "
                "items with too small an ESS are flagged 'poor_overlap' and left out of the "
                "ranking.")
        out = paragraph(text)
        propensity, treated = self._row_propensity()
        if propensity is not None:
            out += self._overlap_figure(propensity, treated)
        if "n_clipped" in t.columns:
            out += paragraph(f"{int(t['n_clipped'].sum()):,} rows had their propensity clipped.",
                              "note")
        if "status" in t.columns:
            poor = t[t["status"] == "poor_overlap"]
            cols = [c for c in self._keys + ["n", "n_treated", "ess_treated", "ess_control",
                                             "e_min", "e_max", "ate", "se"] if c in t.columns]
            if len(poor):
                if {"ess_treated", "ess_control"} <= set(t.columns):
                    poor = poor.assign(_ess=np.minimum(poor["ess_treated"], poor["ess_control"]))
                    poor = poor.sort_values("_ess")
                out += html_table(poor[cols], max_rows=30,
                                   caption=f"Flagged for poor overlap ({len(poor)} items)")
            else:
                out += paragraph("No item is flagged for poor overlap.")
        return out

    def _row_propensity(self):
        est = self._estimator
        if self._data is None or "treatment" not in self._roles:
            return None, None
        treated = self._data[self._roles["treatment"][0]].to_numpy(dtype=float)
        if est is not None and getattr(est, "propensity_", None) is not None \
                and len(est.propensity_) == len(treated):
            return est.propensity_.to_numpy(dtype=float), treated
        if "propensity" in self._roles:
            return self._data[self._roles["propensity"][0]].to_numpy(dtype=float), treated
        return None, None

    def _overlap_figure(self, propensity, treated) -> str:
        finite = np.isfinite(propensity)
        flagged = np.zeros(len(propensity), bool)
        if self._data is not None and "status" in self._table.columns and "item" in self._roles:
            poor = self._table.loc[self._table["status"] == "poor_overlap", self._keys[0]]
            flagged = self._data[self._roles["item"][0]].isin(poor).to_numpy()
        panels = [("all rows", finite)]
        if (flagged & finite).any():
            panels.append(("rows of items flagged 'poor_overlap'", flagged & finite))
        fig = new_figure(4.2 * len(panels), 3.2)
        bins = np.linspace(0, 1, 41)
        for ax, (name, rows) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
            for arm, colour, label in ((1, "#c44e52", "recommended"),
                                       (0, "#4c72b0", "not recommended")):
                values = propensity[rows & (treated == arm)]
                if len(values):
                    ax.hist(values, bins=bins, density=True, alpha=0.55, color=colour,
                            label=f"{label} ({len(values):,})")
            ax.set_xlabel("propensity of being recommended")
            ax.set_ylabel("density")
            ax.set_title(name, fontsize=10)
            ax.legend(fontsize=8)
        caption = ("Propensity distributions by arm. Good overlap: both colours spread over the "
                   "same range. Mass piled at the edges means some users were (almost) always "
                   "or never shown the item.")
        return (f"<figure>{figure_to_img(fig, 'propensity distributions by arm')}"
                f"<figcaption>{escape(caption)}</figcaption></figure>")

    def _forest_html(self) -> str:
        ok = self._ok()
        if not len(ok):
            return paragraph("No item has a usable estimate.", "warn")
        score = "posterior_mean" if "posterior_mean" in ok.columns else "ate"
        ordered = ok.sort_values(score, ascending=False, kind="stable")
        k = self.top
        chosen = ordered if len(ordered) <= 2 * k else pd.concat([ordered.head(k), ordered.tail(k)])
        fig = new_figure(7.5, 1.2 + 0.28 * len(chosen))
        ax = fig.subplots()
        y = np.arange(len(chosen))[::-1].astype(float)
        shrunk = "posterior_low" in chosen.columns
        offset = 0.17 if shrunk else 0.0
        ax.errorbar(chosen["ate"], y + offset,
                    xerr=[chosen["ate"] - chosen["ci_low"], chosen["ci_high"] - chosen["ate"]],
                    fmt="o", color="#888888", ms=4, capsize=2, label="raw estimate, 95% CI")
        if shrunk:
            mean = chosen["posterior_mean"]
            ax.errorbar(mean, y - offset,
                        xerr=[np.maximum(mean - chosen["posterior_low"], 0),
                              np.maximum(chosen["posterior_high"] - mean, 0)],
                        fmt="D", color="#0b5cad", ms=4, capsize=2,
                        label="shrunk (empirical Bayes), 95% interval")
        ax.axvline(0, color="black", lw=0.8)
        if len(chosen) > 2 * k - 1 and len(ordered) > 2 * k:
            ax.axhline(k - 0.5, color="#bbbbbb", ls="--", lw=0.8)
        ax.set_yticks(y, [mpl_label(v) for v in self._item_label(chosen)], fontsize=8)
        ax.set_xlabel("effect of recommending the item on the outcome")
        ax.legend(fontsize=8, loc="lower right")
        caption = (f"The {min(k, len(ordered))} items with the largest and smallest "
                   f"{'shrunk' if shrunk else 'raw'} effects. Grey: the item's own estimate; "
                   "blue: after pooling with all items. Wide grey bars pulled towards the "
                   "middle are small items whose raw estimate is mostly noise.")
        cols = [c for c in self._keys + ["ate", "ci_low", "ci_high", "posterior_mean",
                                         "posterior_low", "posterior_high", "prob_positive",
                                         "n", "rank"] if c in chosen.columns]
        return (f"<figure>{figure_to_img(fig, 'forest plot of item effects')}"
                f"<figcaption>{escape(caption)}</figcaption></figure>"
                + html_table(chosen[cols], caption="The items in the plot"))

    def _popularity_html(self) -> str:
        ok, pop = self._ok(), self._popularity
        if pop is None or not len(ok):
            return paragraph("The effects table has no naive click-rate column.", "note")
        from scipy import stats

        label = ("naive click rate when recommended" if pop == "treated_mean"
                 else "naive difference, recommended minus not")
        fig = new_figure(6.5, 4.2)
        ax = fig.subplots()
        sizes = 8 + 60 * np.sqrt(ok["n"] / ok["n"].max()) if "n" in ok.columns else 20
        ax.scatter(ok[pop], ok["ate"], s=sizes, alpha=0.5, color="#888888", edgecolor="white",
                   label="raw estimate")
        if "posterior_mean" in ok.columns:
            ax.scatter(ok[pop], ok["posterior_mean"], s=12, marker="D", color="#0b5cad",
                       label="shrunk estimate")
            ax.legend(fontsize=8)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("causal effect of recommending")
        rho = stats.spearmanr(ok[pop], ok["ate"]).statistic if len(ok) > 2 else np.nan
        text = (f"Each dot is an item (size: rows). Spearman correlation between the {label} "
                f"and the estimated causal effect: {rho:.2f}. Items users click a lot when "
                "shown are often items they would have found anyway: a high click rate is not "
                "the same as a high effect of recommending.")
        return (f"<figure>{figure_to_img(fig, 'effect versus naive click rate')}"
                f"<figcaption>{escape(text)}</figcaption></figure>")

    def _ranking_html(self) -> str:
        ok, pop = self._ok(), self._popularity
        if "rank" not in ok.columns or pop is None:
            return paragraph("No ranking is available.", "note")
        k = min(self.top, len(ok))
        causal = ok.sort_values("rank").head(k)
        naive = ok.sort_values(pop, ascending=False, kind="stable").head(k)
        side = pd.DataFrame({
            "position": np.arange(1, k + 1),
            "naive: item": self._item_label(naive).to_numpy(),
            f"naive: {pop}": naive[pop].to_numpy(),
            "naive: its causal effect": naive["posterior_mean"].to_numpy(),
            "causal: item": self._item_label(causal).to_numpy(),
            "causal: effect (shrunk)": causal["posterior_mean"].to_numpy(),
            "causal: P(effect > 0)": causal["prob_positive"].to_numpy(),
        })
        shared = len(set(self._item_label(naive)) & set(self._item_label(causal)))
        out = paragraph(f"{shared} of the naive top {k} are also in the causal top {k}.")
        out += html_table(side, caption=f"Top {k}: by naive click rate versus by causal effect")
        if self._policies is not None:
            policies = self._policies.assign(
                description=self._policies["policy"].map(_POLICY_NAMES).fillna(""))
            out += paragraph(
                "Expected incremental outcome per recommendation under three policies. The "
                "top-k policies are valued at shrunk effects (raw values of selected items "
                "are biased upwards by the selection); 'raw_incremental' shows the raw "
                "plug-in value for contrast.")
            out += html_table(policies, caption="Policy comparison")
        return out

    def _refutation_html(self) -> str:
        out = ""
        if self.refutation is not None:
            from ..refute.refutations import refutation_setting

            ref = self.refutation if isinstance(self.refutation, pd.DataFrame) else pd.DataFrame()
            alpha = refutation_setting(ref, "alpha", 0.05)
            fraction = refutation_setting(ref, "subset_fraction", 0.8)
            out += "<h3>Refutation checks</h3>" + paragraph(
                f"Placebo: with the treatment shuffled, about {alpha:.0%} "
                "of items should look significant. Random common cause: adding a noise "
                "confounder should not move estimates. Subsets: estimates on random "
                f"{fraction:.0%} subsets should agree within their "
                "noise.") + _refutation_tables(self.refutation)
        sens = [c for c in ("rv", "rv_ci", "e_value", "e_value_ci") if c in self._table.columns]
        if sens:
            ok = self._ok()
            out += "<h3>Sensitivity to hidden confounding</h3>" + paragraph(
                "How strong would an unmeasured confounder have to be to explain an effect "
                "away? 'rv' is the share of residual variance of both exposure and outcome it "
                "would need to explain (robustness value; 'rv_ci' to make the effect "
                "non-significant); 'e_value' the risk ratio it would need with both. Larger "
                "is more robust; values near 0 (rv) or 1 (E-value) mean fragile.")
            top = ok.sort_values("rank" if "rank" in ok.columns else "ate", kind="stable",
                                 ascending="rank" in ok.columns).head(self.top)
            cols = [c for c in self._keys + ["ate", "se"] + sens if c in top.columns]
            out += html_table(top[cols], caption="Top-ranked items")
        return out or paragraph("No refutation or sensitivity results were given.", "note")

    def _assumptions_html(self) -> str:
        r = self._roles
        treatment = r.get("treatment", ["the recommendation"])[0]
        outcome = r.get("outcome", ["the outcome"])[0]
        adjusted = [c for role in ("confounders", "categorical", "text") for c in r.get(role, [])]
        measured = ", ".join(map(str, adjusted)) if adjusted else "the adjustment columns"
        items = [
            f"No hidden confounding: everything that made the recommender show an item "
            f"({treatment}) and also changes {outcome} is captured by {measured}. This cannot "
            "be tested from the data; the sensitivity values say how much it would take to "
            "overturn a result.",
            "Overlap (positivity): in every kind of situation the item could have been shown "
            "or not. Checked above; items that fail are flagged and not ranked.",
            "Measured before the recommendation: the adjustment columns are not themselves "
            "changed by the recommendation (otherwise part of the effect is adjusted away).",
            "No interference: recommending an item to one user does not change other users' "
            f"outcomes, and {outcome} of a row depends only on that row's recommendation "
            "(slates and competition between items are not modelled).",
            "Consistency: 'recommended' means the same intervention for every row of an "
            "item (same placement and format).",
        ]
        if self._estimator is not None and getattr(self._estimator, "method", None) == "aipw":
            items.append("The doubly robust (AIPW) estimate is consistent if either the "
                         "exposure model or the outcome model is right; cross-fitting keeps "
                         "the models from overfitting their own rows.")
        return "<ul class=\"plain\">" + "".join(f"<li>{escape(s)}</li>" for s in items) + "</ul>"

    def _reproducibility_html(self) -> str:
        est, seed = self._estimator, self._seed()
        facts = {"python": platform.python_version()}
        for package in ("causalrec", "numpy", "pandas", "scipy", "scikit-learn", "torch",
                        "matplotlib", "transformers"):
            facts[package] = _version(package)
        facts["seed"] = "not recorded" if seed is None else seed
        if self._data is not None:
            facts["input hash (sha256 of the log)"] = _frame_hash(self._data)
        facts["effects hash (sha256)"] = _frame_hash(self._effects)
        params = _estimator_params(est) if est is not None else {}
        out = facts_table(facts, caption="Environment and inputs")
        if params:
            out += facts_table({k: str(v) for k, v in params.items()},
                                caption="Estimator settings")
        return out


def _refutation_tables(refutation) -> str:
    """Refutation output as tables: summaries for ``refute_item_effects`` output."""
    if isinstance(refutation, pd.DataFrame) and {"check", "passed"} <= set(refutation.columns):
        from ..refute.refutations import refutation_keys, summarize_refutations

        out = html_table(summarize_refutations(refutation), caption="By check")
        failed = refutation[refutation["passed"].eq(False).fillna(False)]
        keys = refutation_keys(refutation)
        if len(failed):
            counts = (failed.groupby(keys + ["check"]).size().rename("failed_runs")
                      .reset_index().sort_values("failed_runs", ascending=False, kind="stable"))
            out += html_table(counts, max_rows=20, caption="Items failing a check")
        else:
            out += paragraph("No item failed a check.")
        return out
    if isinstance(refutation, pd.Series):
        refutation = refutation.to_frame()
    if isinstance(refutation, pd.DataFrame):
        return html_table(refutation, max_rows=50)
    if isinstance(refutation, dict):
        return facts_table(refutation)
    return f"<pre>{escape(refutation)}</pre>"


def _estimator_params(estimator) -> dict:
    """The estimator's constructor arguments (scikit-learn convention: stored as given)."""
    names = inspect.signature(type(estimator).__init__).parameters
    return {name: getattr(estimator, name) for name in names
            if name != "self" and hasattr(estimator, name)}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _frame_hash(frame: pd.DataFrame) -> str:
    """sha256 of a frame's column names and values (independent of its index)."""
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
