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

from .first_screen import choose_items, popularity_verdict
from .forest import forest_html
from .html import (escape, facts_table, figure_to_img, html_table, new_figure, paragraph,
                   png_to_img)
from .overlap import overlap_html

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
        return overlap_html(self._table, self._keys, self._item_label(self._table),
                            self._verdict, self._max_outside, self._row_overlap())

    def _row_overlap(self):
        """(propensity, treated, each row's item overlap verdict) or None without rows."""
        propensity, treated = self._row_propensity()
        if propensity is None:
            return None
        row_verdict = np.full(len(propensity), "", dtype=object)
        item_columns = self._roles.get("item", [])
        if len(item_columns) == len(self._keys):
            rows = pd.MultiIndex.from_frame(self._data[item_columns].astype(str))
            items = pd.MultiIndex.from_frame(self._table[self._keys].astype(str))
            where = items.get_indexer(rows)
            row_verdict[where >= 0] = self._verdict.to_numpy()[where[where >= 0]]
        return propensity, treated, row_verdict

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

    def _forest_html(self) -> str:
        ok = self._ok()
        if "rank" in self._table.columns and len(ok):
            more, less, (more_ok, less_ok) = choose_items(self._table)
            more, less = (more.index if more_ok else []), (less.index if less_ok else [])
        else:
            more = less = []
        return forest_html(ok, self._item_label(self._table), self.top, more, less, self._keys)

    def _popularity_html(self) -> str:
        ok, pop = self._ok(), self._popularity
        if pop is None or not len(ok):
            return paragraph("The effects table has no naive click-rate column.", "note")
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
        verdict = (popularity_verdict(self._table, pop, self.top, self._settings["alpha"])
                   if "rank" in self._table.columns else None)
        text = "Each dot is an item (size: rows). " + (
            verdict["text"] if verdict else "Too few ranked items to compare the rankings.")
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
        shared = len(set(naive.index) & set(causal.index))
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
        if getattr(self._estimator, "estimand", None) == "conditional":
            items.append("The intervals are for the average effect over the logged users as "
                         "they are (estimand='conditional'), not over users drawn anew: "
                         "narrower where effects vary over users, and not a forecast for "
                         "a different audience.")
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
