"""Offline effect report: one self-contained HTML file plus the tables behind it.

The HTML embeds its plots (base64 PNG) and its styles, loads no script, font or style from
anywhere, and forbids it with a Content-Security-Policy. Every string that comes from the
data (item names, column names, titles) is HTML-escaped, so a malicious item name shows up
as text.

``_CSS``, ``_escape``, ``_html_table``, ``_facts_table``, ``_paragraph``, ``_section``,
``_html_page``, ``_new_figure``, ``_figure_to_img`` and ``_mpl_label`` are shared with
``causalrec.audit``: keep their signatures stable.
"""
from __future__ import annotations

import base64
import hashlib
import html
import inspect
import io
import platform
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["EffectReport"]

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --accent: #0b5cad; --bad: #b42318; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
       margin: 0; background: #f6f8fa; line-height: 1.45; font-size: 15px; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.3em; }
h2 { font-size: 1.3em; border-bottom: 1px solid var(--line); padding-bottom: 4px;
     margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p.lead { color: var(--muted); margin-top: 0; }
p.note, figcaption { color: var(--muted); font-size: 0.9em; }
p.warn { color: var(--bad); }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav a, a { color: var(--accent); text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.88em; }
caption { text-align: left; color: var(--muted); padding-bottom: 4px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: left;
         vertical-align: top; }
th { background: #f0f3f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.more td { color: var(--muted); font-style: italic; }
figure { margin: 10px 0 18px; }
img.figure { max-width: 100%; height: auto; border: 1px solid var(--line); }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.card .value { font-size: 1.35em; font-weight: 600; }
.card .label { color: var(--muted); font-size: 0.85em; }
.cols { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
ul.plain li { margin-bottom: 0.4em; }
code { background: #f0f3f6; padding: 1px 4px; border-radius: 3px; }
"""

# No external resource can load, and no script can run, even if escaping ever failed.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# ----------------------------------------------------------------- shared HTML helpers
def _escape(value) -> str:
    """HTML-escape any value (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def _format_cell(value, float_format: str) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else float_format.format(value)
    return str(value)


def _html_table(frame: pd.DataFrame, *, float_format: str = "{:.4g}", max_rows: int | None = None,
                index: bool = False, caption: str | None = None) -> str:
    """An escaped HTML table; numeric columns are right-aligned.

    ``max_rows`` shows only the first rows and says how many were left out.
    """
    if index:
        frame = frame.reset_index()
    shown = frame if max_rows is None else frame.head(max_rows)
    numeric = [pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
               for dtype in frame.dtypes]
    head = "".join(f'<th{" class=num" if num else ""}>{_escape(col)}</th>'
                   for col, num in zip(frame.columns, numeric))
    rows = []
    for values in shown.itertuples(index=False, name=None):
        cells = "".join(f'<td{" class=num" if num else ""}>'
                        f"{_escape(_format_cell(v, float_format))}</td>"
                        for v, num in zip(values, numeric))
        rows.append(f"<tr>{cells}</tr>")
    if len(frame) > len(shown):
        rows.append(f'<tr class="more"><td colspan="{len(frame.columns)}">'
                    f"... {len(frame) - len(shown)} more rows</td></tr>")
    cap = f"<caption>{_escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _facts_table(facts: dict, caption: str | None = None) -> str:
    """A two-column (name, value) table from a dict."""
    values = [_format_cell(v, "{:.4g}") for v in facts.values()]
    frame = pd.DataFrame({"": list(facts), "value": values})
    return _html_table(frame, caption=caption)


def _new_figure(width: float = 7.0, height: float = 4.0):
    """A matplotlib Figure on the Agg canvas, outside pyplot (no global state, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_to_img(data: bytes, alt: str = "") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img class="figure" src="data:image/png;base64,{encoded}" alt="{_escape(alt)}">'


def _figure_to_img(fig, alt: str = "", dpi: int = 110) -> str:
    """``<img>`` tag holding the figure as an embedded base64 PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return _png_to_img(buffer.getvalue(), alt)


def _section(title: str, body: str, anchor: str | None = None) -> str:
    """An ``<section>`` with an escaped ``<h2>`` title; ``body`` is trusted HTML."""
    ident = f' id="{_escape(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{_escape(title)}</h2>{body}</section>"


def _paragraph(text: str, cls: str | None = None) -> str:
    """An escaped paragraph."""
    return f'<p{f" class={cls}" if cls else ""}>{_escape(text)}</p>'


def _html_page(title: str, body: str, subtitle: str | None = None) -> str:
    """A complete, self-contained HTML document; ``body`` is trusted HTML."""
    lead = f'<p class="lead">{_escape(subtitle)}</p>' if subtitle else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><main><h1>{_escape(title)}</h1>{lead}{body}</main></body></html>\n")


def _mpl_label(value, width: int = 28) -> str:
    """A data string safe as matplotlib text: '$' would start mathtext."""
    text = str(value)
    if len(text) > width:
        text = text[: width - 1] + "\u2026"
    return text.replace("\\", "\\\\").replace("$", r"\$")


# ----------------------------------------------------------------- the report
_POLICY_NAMES = {
    "causal_top_k": "top k by causal effect (posterior mean)",
    "naive_top_k": "top k by naive click rate",
    "logging": "what the logging policy did",
}


class EffectReport:
    """A self-contained HTML report of per-item effects, and the tables behind it.

    Parameters
    ----------
    estimator_or_effects : a fitted ``ItemEffectEstimator`` (gives the log, per-row
        propensities and settings) or an effects DataFrame from ``estimate_item_effects``.
    log : ``InteractionLog`` or DataFrame; defaults to the estimator's log. Used for the data
        summary and the input hash.
    graph : ``CausalGraph`` to draw, with its adjustment set.
    ranking : output of ``rank_items``; computed (NPMLE prior) when None.
    refutation : output of ``refute_item_effects`` (or any DataFrame / dict / text).
    sensitivity : output of ``sensitivity(effects)`` (its columns join the effects table).
    title : report title.
    top : items shown at each end of the forest plot and in the ranking tables.
    seed : shown in the reproducibility block (default: the estimator's seed).

    ``to_html()`` returns the page; ``save(directory)`` writes ``report.html``,
    ``effects.csv`` (effects with ranking and sensitivity columns), ``effects.parquet`` and,
    when available, ``policies.csv`` and ``refutation.csv``. ``table()`` is the joined table.
    """

    def __init__(self, estimator_or_effects, log=None, graph=None, ranking=None,
                 refutation=None, sensitivity=None,
                 title: str = "Causal effects of recommendations", *, top: int = 10, seed=None):
        self.estimator_or_effects = estimator_or_effects
        self.log = log
        self.graph = graph
        self.ranking = ranking
        self.refutation = refutation
        self.sensitivity = sensitivity
        self.title = title
        self.top = top
        self.seed = seed

    # ------------------------------------------------------------- inputs
    def _prepare(self) -> None:
        """Validate the inputs and join the tables (again on every output: cheap, and later
        changes to the parameters are honoured)."""
        source = self.estimator_or_effects
        if isinstance(source, pd.DataFrame):
            self._estimator, effects = None, source
        elif hasattr(source, "effects_"):
            self._estimator, effects = source, source.effects_
        elif hasattr(source, "fit"):
            raise ValueError("the estimator is not fitted yet; call fit(log) first")
        else:
            raise TypeError("EffectReport expects a fitted ItemEffectEstimator or an effects "
                            f"DataFrame, got {type(source).__name__}")
        missing = [c for c in ("item", "ate", "se") if c not in effects.columns]
        if missing:
            raise ValueError(f"effects lack required column(s) {missing}")
        if not isinstance(self.top, (int, np.integer)) or self.top < 1:
            raise ValueError(f"top must be a positive integer, got {self.top!r}")
        self._effects = effects
        self._keys = list(effects.columns[: max(1, effects.columns.get_loc("ate"))])
        self._data, self._roles = self._resolve_log()
        self._notes = []
        ranking = self.ranking if self.ranking is not None else self._rank(effects)
        table = _join_columns(effects, ranking, self._keys, "ranking")
        table = _join_columns(table, self.sensitivity, self._keys, "sensitivity")
        if "rank" in table.columns:
            table = table.sort_values("rank", kind="stable", na_position="last", ignore_index=True)
        self._table = table
        self._popularity = next((c for c in ("treated_mean", "naive_ate") if c in table), None)
        self._policies = self._compare_policies(effects) if "rank" in table.columns else None

    def _resolve_log(self):
        from .schema import InteractionLog

        log = self.log
        if log is None and self._estimator is not None:
            log = getattr(self._estimator, "log_", None)
        if log is None:
            return None, {}
        if isinstance(log, InteractionLog):
            return log.data, log.roles
        if isinstance(log, pd.DataFrame):
            fitted = getattr(self._estimator, "log_", None)
            return log, (fitted.roles if fitted is not None else {})
        raise TypeError(f"log must be an InteractionLog or a DataFrame, got {type(log).__name__}")

    def _seed(self):
        return self.seed if self.seed is not None else getattr(self._estimator, "seed", None)

    def _rank(self, effects):
        from .rank import rank_items

        try:
            return rank_items(effects, k=None, seed=self._seed() or 0)
        except ValueError as exc:  # e.g. no item with status "ok"
            self._notes.append(f"No ranking: {exc}.")
            return None

    def _compare_policies(self, effects):
        from .rank import compare_policies

        n_ok = int(self._table["rank"].notna().sum())
        if self._popularity is None or n_ok < 2:
            return None
        try:  # k below the number of items, else both top-k policies take every item
            return compare_policies(effects, k=min(self.top, n_ok - 1), popularity=self._popularity)
        except ValueError as exc:
            self._notes.append(f"No policy comparison: {exc}.")
            return None

    # ------------------------------------------------------------- outputs
    def table(self) -> pd.DataFrame:
        """Effects joined with the ranking (and sensitivity) columns, best rank first."""
        self._prepare()
        return self._table.copy()

    def to_html(self) -> str:
        """The report as one self-contained HTML string."""
        self._prepare()
        parts = [
            ("Summary", "summary", self._summary_html()),
            ("Data", "data", self._data_html()),
            ("Causal graph and adjustment", "graph", self._graph_html()),
            ("Overlap diagnostics", "overlap", self._overlap_html()),
            ("Largest and smallest effects", "effects", self._forest_html()),
            ("Popular is not causal", "popularity", self._popularity_html()),
            ("Naive versus causal ranking", "ranking", self._ranking_html()),
            ("Refutation and sensitivity", "refutation", self._refutation_html()),
            ("Assumptions", "assumptions", self._assumptions_html()),
            ("Reproducibility", "reproducibility", self._reproducibility_html()),
        ]
        nav = "<nav><ul>" + "".join(f'<li><a href="#{anchor}">{_escape(title)}</a></li>'
                                    for title, anchor, _ in parts) + "</ul></nav>"
        body = nav + "".join(_section(title, content, anchor) for title, anchor, content in parts)
        subtitle = (f"{len(self._table)} items; effect of recommending each item on "
                    f"{self._roles.get('outcome', ['the outcome'])[0]}")
        return _html_page(self.title, body, subtitle)

    def save(self, directory, parquet: bool = True) -> Path:
        """Write ``report.html`` and the tables into ``directory``; returns the HTML path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        page = self.to_html()
        table = self._table
        table.to_csv(directory / "effects.csv", index=False)
        if parquet:
            table.to_parquet(directory / "effects.parquet", index=False)
        if self._policies is not None:
            self._policies.to_csv(directory / "policies.csv", index=False)
        if isinstance(self.refutation, pd.DataFrame):
            self.refutation.to_csv(directory / "refutation.csv", index=False)
        path = directory / "report.html"
        path.write_text(page, encoding="utf-8")
        return path

    # ------------------------------------------------------------- sections
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
        html_cards = "".join(f'<div class="card"><div class="value">{_escape(v)}</div>'
                             f'<div class="label">{_escape(k)}</div></div>'
                             for k, v in cards.items())
        text = ("Each item's effect is the average change in the outcome caused by recommending "
                "it, compared with not recommending it, to the users and contexts in which it "
                "was a candidate. Raw estimates are adjusted for confounding; shrunk "
                "(empirical-Bayes) estimates also pool information across items, which "
                "tempers the noisy extremes of small items. Use the shrunk values to rank.")
        out = f'<div class="cards">{html_cards}</div>' + _paragraph(text)
        if self._estimator is not None:
            out += _facts_table(self._estimator.summary().info, caption="Estimation")
        return out + "".join(_paragraph(note, "warn") for note in self._notes)

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
            out += _facts_table(facts, caption="The log")
            if roles:
                frame = pd.DataFrame({"role": list(roles),
                                      "columns": [", ".join(map(str, c)) for c in roles.values()]})
                out += _html_table(frame, caption="Column roles")
        else:
            out += _paragraph("No log was given: the figures below come from the effects table.",
                              "note")
        t = self._table
        if "status" in t.columns:
            counts = t["status"].value_counts().rename_axis("status").reset_index(name="items")
            out += _html_table(counts, caption="Item status (anything but 'ok' is not ranked)")
        if "n" in t.columns:
            n = t["n"].astype(float)
            facts = {"min": n.min(), "median": n.median(), "max": n.max()}
            out += _facts_table({k: f"{v:,.0f}" for k, v in facts.items()},
                                caption="Rows per item (few items carry most rows)")
        return out

    def _graph_html(self) -> str:
        adjusted = [c for role in ("confounders", "categorical", "text")
                    for c in self._roles.get(role, [])]
        used = (_paragraph("Adjusted for: " + ", ".join(map(str, adjusted)) + ".")
                if adjusted else "")
        if self.graph is None:
            return used + _paragraph("No causal graph was given.", "note")
        from .graph import NotIdentifiableError

        out = ""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.graph.draw(Path(tmp) / "graph.png")
                out += _png_to_img(Path(path).read_bytes(), "causal graph")
        except (ValueError, OSError) as exc:
            out += _paragraph(f"The graph could not be drawn: {exc}", "warn")
        try:
            adjustment = self.graph.adjustment_set()
            out += _paragraph("Backdoor adjustment set implied by the graph: "
                              + (", ".join(adjustment) or "(empty)") + ".")
        except NotIdentifiableError as exc:
            out += _paragraph(str(exc), "warn")
        out += used
        if hasattr(self.graph, "summary"):
            out += _html_table(self.graph.summary(), caption="Nodes")
        return out

    def _overlap_html(self) -> str:
        t = self._table
        text = ("An item's effect can only be learned where users could plausibly have been "
                "shown it and plausibly not: propensities near 0 or 1 leave one arm empty, "
                "a few rows get huge weights and the estimate becomes fragile. The effective "
                "sample size (ESS) per arm counts how many rows the weights are really worth; "
                "items with too small an ESS are flagged 'poor_overlap' and left out of the "
                "ranking.")
        out = _paragraph(text)
        propensity, treated = self._row_propensity()
        if propensity is not None:
            out += self._overlap_figure(propensity, treated)
        if "n_clipped" in t.columns:
            out += _paragraph(f"{int(t['n_clipped'].sum()):,} rows had their propensity clipped.",
                              "note")
        if "status" in t.columns:
            poor = t[t["status"] == "poor_overlap"]
            cols = [c for c in self._keys + ["n", "n_treated", "ess_treated", "ess_control",
                                             "e_min", "e_max", "ate", "se"] if c in t.columns]
            if len(poor):
                if {"ess_treated", "ess_control"} <= set(t.columns):
                    poor = poor.assign(_ess=np.minimum(poor["ess_treated"], poor["ess_control"]))
                    poor = poor.sort_values("_ess")
                out += _html_table(poor[cols], max_rows=30,
                                   caption=f"Flagged for poor overlap ({len(poor)} items)")
            else:
                out += _paragraph("No item is flagged for poor overlap.")
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
        fig = _new_figure(4.2 * len(panels), 3.2)
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
        return (f"<figure>{_figure_to_img(fig, 'propensity distributions by arm')}"
                f"<figcaption>{_escape(caption)}</figcaption></figure>")

    def _forest_html(self) -> str:
        ok = self._ok()
        if not len(ok):
            return _paragraph("No item has a usable estimate.", "warn")
        score = "posterior_mean" if "posterior_mean" in ok.columns else "ate"
        ordered = ok.sort_values(score, ascending=False, kind="stable")
        k = self.top
        chosen = ordered if len(ordered) <= 2 * k else pd.concat([ordered.head(k), ordered.tail(k)])
        fig = _new_figure(7.5, 1.2 + 0.28 * len(chosen))
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
        ax.set_yticks(y, [_mpl_label(v) for v in self._item_label(chosen)], fontsize=8)
        ax.set_xlabel("effect of recommending the item on the outcome")
        ax.legend(fontsize=8, loc="lower right")
        caption = (f"The {min(k, len(ordered))} items with the largest and smallest "
                   f"{'shrunk' if shrunk else 'raw'} effects. Grey: the item's own estimate; "
                   "blue: after pooling with all items. Wide grey bars pulled towards the "
                   "middle are small items whose raw estimate is mostly noise.")
        cols = [c for c in self._keys + ["ate", "ci_low", "ci_high", "posterior_mean",
                                         "posterior_low", "posterior_high", "prob_positive",
                                         "n", "rank"] if c in chosen.columns]
        return (f"<figure>{_figure_to_img(fig, 'forest plot of item effects')}"
                f"<figcaption>{_escape(caption)}</figcaption></figure>"
                + _html_table(chosen[cols], caption="The items in the plot"))

    def _popularity_html(self) -> str:
        ok, pop = self._ok(), self._popularity
        if pop is None or not len(ok):
            return _paragraph("The effects table has no naive click-rate column.", "note")
        from scipy import stats

        label = ("naive click rate when recommended" if pop == "treated_mean"
                 else "naive difference, recommended minus not")
        fig = _new_figure(6.5, 4.2)
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
        return (f"<figure>{_figure_to_img(fig, 'effect versus naive click rate')}"
                f"<figcaption>{_escape(text)}</figcaption></figure>")

    def _ranking_html(self) -> str:
        ok, pop = self._ok(), self._popularity
        if "rank" not in ok.columns or pop is None:
            return _paragraph("No ranking is available.", "note")
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
        out = _paragraph(f"{shared} of the naive top {k} are also in the causal top {k}.")
        out += _html_table(side, caption=f"Top {k}: by naive click rate versus by causal effect")
        if self._policies is not None:
            policies = self._policies.assign(
                description=self._policies["policy"].map(_POLICY_NAMES).fillna(""))
            out += _paragraph(
                "Expected incremental outcome per recommendation under three policies. The "
                "top-k policies are valued at shrunk effects (raw values of selected items "
                "are biased upwards by the selection); 'raw_incremental' shows the raw "
                "plug-in value for contrast.")
            out += _html_table(policies, caption="Policy comparison")
        return out

    def _refutation_html(self) -> str:
        out = ""
        if self.refutation is not None:
            attrs = getattr(self.refutation, "attrs", {})
            out += "<h3>Refutation checks</h3>" + _paragraph(
                f"Placebo: with the treatment shuffled, about {attrs.get('alpha', 0.05):.0%} "
                "of items should look significant. Random common cause: adding a noise "
                "confounder should not move estimates. Subsets: estimates on random "
                f"{attrs.get('subset_fraction', 0.8):.0%} subsets should agree within their "
                "noise.") + _refutation_tables(self.refutation, self._keys)
        sens = [c for c in ("rv", "rv_ci", "e_value", "e_value_ci") if c in self._table.columns]
        if sens:
            ok = self._ok()
            out += "<h3>Sensitivity to hidden confounding</h3>" + _paragraph(
                "How strong would an unmeasured confounder have to be to explain an effect "
                "away? 'rv' is the share of residual variance of both exposure and outcome it "
                "would need to explain (robustness value; 'rv_ci' to make the effect "
                "non-significant); 'e_value' the risk ratio it would need with both. Larger "
                "is more robust; values near 0 (rv) or 1 (E-value) mean fragile.")
            top = ok.sort_values("rank" if "rank" in ok.columns else "ate", kind="stable",
                                 ascending="rank" in ok.columns).head(self.top)
            cols = [c for c in self._keys + ["ate", "se"] + sens if c in top.columns]
            out += _html_table(top[cols], caption="Top-ranked items")
        return out or _paragraph("No refutation or sensitivity results were given.", "note")

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
        return "<ul class=\"plain\">" + "".join(f"<li>{_escape(s)}</li>" for s in items) + "</ul>"

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
        out = _facts_table(facts, caption="Environment and inputs")
        if params:
            out += _facts_table({k: str(v) for k, v in params.items()},
                                caption="Estimator settings")
        return out


def _join_columns(table: pd.DataFrame, extra, keys: list[str], what: str) -> pd.DataFrame:
    """``table`` with the columns of ``extra`` it lacks, matched on the item keys."""
    if extra is None:
        return table
    if not isinstance(extra, pd.DataFrame):
        raise TypeError(f"{what} must be a DataFrame, got {type(extra).__name__}")
    missing = [k for k in keys if k not in extra.columns]
    if missing:
        raise ValueError(f"{what} lacks the item column(s) {missing}")
    new = [c for c in extra.columns if c not in table.columns]
    if extra.duplicated(keys).any():
        raise ValueError(f"{what} has several rows for the same item")
    try:
        return table.merge(extra[keys + new], on=keys, how="left", validate="one_to_one")
    except ValueError as exc:
        raise ValueError(f"{what} does not match the effects' items: {exc}") from exc


def _refutation_tables(refutation, keys) -> str:
    """Refutation output as tables: summaries for ``refute_item_effects`` output."""
    if isinstance(refutation, pd.DataFrame) and {"check", "passed"} <= set(refutation.columns):
        from .refute import summarize_refutations

        out = _html_table(summarize_refutations(refutation), caption="By check")
        failed = refutation[refutation["passed"].eq(False).fillna(False)]
        keys = [k for k in refutation.attrs.get("keys", keys) if k in refutation.columns]
        if len(failed):
            counts = (failed.groupby(keys + ["check"]).size().rename("failed_runs")
                      .reset_index().sort_values("failed_runs", ascending=False, kind="stable"))
            out += _html_table(counts, max_rows=20, caption="Items failing a check")
        else:
            out += _paragraph("No item failed a check.")
        return out
    if isinstance(refutation, pd.Series):
        refutation = refutation.to_frame()
    if isinstance(refutation, pd.DataFrame):
        return _html_table(refutation, max_rows=50)
    if isinstance(refutation, dict):
        return _facts_table(refutation)
    return f"<pre>{_escape(refutation)}</pre>"


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
