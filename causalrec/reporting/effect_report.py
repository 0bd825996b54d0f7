"""Offline effect report: one self-contained HTML file plus the tables behind it
(the page is built with ``causalrec.reporting.html``: no external resource, data escaped)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..rank.table import check_effects_table
from ..utils.io import table_bytes, write_files
from .effect_sections import EffectSections
from .first_screen import first_screen_html
from .net_section import net_html
from .html import escape, html_page, section
from .items_table import SORT_SCRIPT, items_frame, items_table_html
from .nuisance_section import nuisance_html
from .overlap import DEFAULT_MAX_OUTSIDE, overlap_verdict

__all__ = ["EffectReport"]


class EffectReport(EffectSections):
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
    net : a fitted ``NetEffectEstimator`` (or its effects table): adds the section "Own
        versus net" (``causalrec.reporting.net_section``) and ``net_effects.csv``.

    The page opens with the answer (items to recommend more and less, with their evidence,
    the change in the outcome's total, what could not be estimated), then every item in one
    sortable, searchable table, then the diagnostics.

    ``to_html()`` returns the page; ``save(directory)`` writes ``report.html``, ``items.csv``
    and ``items.parquet`` (the page's item table, linked from it), ``effects.csv`` (effects
    with ranking and sensitivity columns), ``effects.parquet`` and, when available,
    ``policies.csv`` and ``refutation.csv``. ``table()`` is the joined table, ``items()``
    the item table.
    """

    def __init__(self, estimator_or_effects, log=None, graph=None, ranking=None,
                 refutation=None, sensitivity=None,
                 title: str = "Causal effects of recommendations", *, top: int = 10, seed=None,
                 net=None):
        self.estimator_or_effects = estimator_or_effects
        self.log = log
        self.graph = graph
        self.ranking = ranking
        self.refutation = refutation
        self.sensitivity = sensitivity
        self.title = title
        self.top = top
        self.seed = seed
        self.net = net

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
        checked = check_effects_table(effects, owner="EffectReport")
        if not isinstance(self.top, (int, np.integer)) or self.top < 1:
            raise ValueError(f"top must be a positive integer, got {self.top!r}")
        self._effects = effects
        self._keys = checked.keys
        self._data, self._roles = self._resolve_log()
        self._notes = []
        ranking = self.ranking if self.ranking is not None else self._rank(effects)
        table = _join_columns(effects, ranking, self._keys, "ranking")
        table = _join_columns(table, self.sensitivity, self._keys, "sensitivity")
        if "rank" in table.columns:
            table = table.sort_values("rank", kind="stable", na_position="last", ignore_index=True)
        self._table = _with_counts(table)
        self._popularity = next((c for c in ("treated_mean", "naive_ate") if c in table), None)
        self._policies = self._compare_policies(effects) if "rank" in table.columns else None
        est = self._estimator
        self._settings = {name: getattr(est, name, None) for name in
                          ("alpha", "min_rows_per_arm", "min_ess", "max_clipped")}
        self._settings["alpha"] = self._settings["alpha"] or 0.05
        # the estimator's own threshold on an item's rows without overlap
        self._max_outside = self._settings["max_clipped"] or DEFAULT_MAX_OUTSIDE
        self._verdict = overlap_verdict(table, self._max_outside)
        self._top_k = (ranking.attrs.get("top_k", self.top) if isinstance(ranking, pd.DataFrame)
                       else self.top)

    def _resolve_log(self):
        from ..schema import InteractionLog

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
        from ..rank import rank_items

        try:
            return rank_items(effects, k=None, seed=self._seed() or 0)
        except ValueError as exc:  # e.g. no item with status "ok"
            self._notes.append(f"No ranking: {exc}.")
            return None

    def _compare_policies(self, effects):
        from ..rank import compare_policies

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

    def items(self) -> pd.DataFrame:
        """Every item with the columns the page's item table shows (``items.csv``)."""
        self._prepare()
        return items_frame(self._table, self._keys, self._verdict)

    def to_html(self) -> str:
        """The report as one self-contained HTML string."""
        self._prepare()
        outcome = self._roles.get("outcome", ["the outcome"])[0]
        total = None
        if self._data is not None and "outcome" in self._roles:
            total = float(self._data[outcome].astype(float).sum())
        answer = first_screen_html(
            self._table, self._item_label(self._table), self._verdict,
            popularity=self._popularity, outcome=outcome, settings=self._settings,
            top_k=self._top_k, fdr=_rank_default("fdr"), total_outcome=total)
        items = items_table_html(items_frame(self._table, self._keys, self._verdict))
        parts = [
            ("The answer: what to recommend more and less", "answer", answer),
            ("All items", "items", items),
            ("Summary", "summary", self._summary_html()),
            ("Data", "data", self._data_html()),
            ("Causal graph and adjustment", "graph", self._graph_html()),
            ("Overlap diagnostics", "overlap", self._overlap_html()),
            ("Nuisance models", "nuisance", nuisance_html(self._estimator)),
            ("Largest and smallest effects", "effects", self._forest_html()),
            ("Popularity versus causal effect", "popularity", self._popularity_html()),
            ("Naive versus causal ranking", "ranking", self._ranking_html()),
            ("Refutation and sensitivity", "refutation", self._refutation_html()),
            *([("Own versus net", "net", net_html(self.net, self.top))] if self.net is not None else []),
            ("Assumptions", "assumptions", self._assumptions_html()),
            ("Reproducibility", "reproducibility", self._reproducibility_html()),
        ]
        nav = "<nav><ul>" + "".join(f'<li><a href="#{anchor}">{escape(title)}</a></li>'
                                    for title, anchor, _ in parts) + "</ul></nav>"
        # the answer comes first, above the table of contents
        sections = [section(title, content, anchor) for title, anchor, content in parts]
        body = sections[0] + nav + "".join(sections[1:])
        subtitle = (f"{len(self._table)} items; effect of recommending each item on "
                    f"{self._roles.get('outcome', ['the outcome'])[0]}")
        return html_page(self.title, body, subtitle, scripts=[SORT_SCRIPT])

    def save(self, directory, parquet: bool = True) -> Path:
        """Write ``report.html`` and the tables into ``directory``; returns the HTML path.
        Everything is rendered in memory first (a table Parquet cannot store fails here) and
        the files are moved into place together: an error leaves no partial file."""
        page = self.to_html()
        items = items_frame(self._table, self._keys, self._verdict)
        # CSV cells that a spreadsheet would run as formulas are escaped (Parquet keeps values)
        files = {"items.csv": table_bytes(items, "csv"),
                 "effects.csv": table_bytes(self._table, "csv")}
        if parquet:
            files["items.parquet"] = table_bytes(items, "parquet")
            files["effects.parquet"] = table_bytes(self._table, "parquet")
        if self._policies is not None:
            files["policies.csv"] = table_bytes(self._policies, "csv")
        if isinstance(self.refutation, pd.DataFrame):
            files["refutation.csv"] = table_bytes(self.refutation, "csv")
        if self.net is not None:
            net = self.net.effects_ if hasattr(self.net, "effects_") else self.net
            files["net_effects.csv"] = table_bytes(net, "csv")
        files["report.html"] = page
        return write_files(directory, files)["report.html"]


def _with_counts(table: pd.DataFrame) -> pd.DataFrame:
    """The row counts the first screen shows, from those a table has (a table from another
    tool may carry only ``n`` and ``n_treated``); unknown counts are NaN, shown as blanks."""
    counts = {}
    if "n_control" not in table and {"n", "n_treated"} <= set(table.columns):
        counts["n_control"] = table["n"] - table["n_treated"]
    if "n_treated" not in table and {"n", "n_control"} <= set(table.columns):
        counts["n_treated"] = table["n"] - table["n_control"]
    for name in ("n", "n_treated", "n_control"):
        if name not in table and name not in counts:
            counts[name] = np.nan
    return table.assign(**counts) if counts else table


def _rank_default(name: str):
    """A default of ``rank_items`` (the report ranks with them when given no ranking)."""
    import inspect

    from ..rank import rank_items

    return inspect.signature(rank_items).parameters[name].default


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
