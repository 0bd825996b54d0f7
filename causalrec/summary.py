"""The one summary type of causalrec (statsmodels style): header facts, optionally status
counts and a table; text by ``str()``, HTML in notebooks by ``_repr_html_()``.

It sits beside the estimator contract (``causalrec.base``), below every estimator that returns
one (item effects, net effects, bandit values, uplift, the fairness audit); users also reach
it as ``causalrec.reporting.Summary``."""
from __future__ import annotations

import pandas as pd

from .utils.html import escape, facts_table, html_table, paragraph

__all__ = ["Summary"]


class Summary:
    """Header facts ``info`` (name -> value), ``status_counts`` (status -> count, or None) and
    ``table`` (a DataFrame shown under ``caption``, or None). Subclasses set ``title``."""

    title = ""

    def __init__(self, info: dict, status_counts: pd.Series | None = None,
                 table: pd.DataFrame | None = None, caption: str = "", *,
                 title: str | None = None):
        self.info, self.status_counts, self.table, self.caption = info, status_counts, table, caption
        if title is not None:
            self.title = title

    def _status_line(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.status_counts.items())

    def __str__(self) -> str:
        key_width = max([34] + [len(k) + 2 for k in self.info])
        width = max(78, key_width + 40)
        lines = ["=" * width, self.title.center(width), "=" * width]
        lines += [f"{k + ':':<{key_width}}{v}" for k, v in self.info.items()]
        if self.status_counts is not None:
            lines += ["-" * width, "Item status: " + self._status_line(), "-" * width]
        if self.table is not None:
            lines.append(f"{self.caption} (top {len(self.table)}):")
            with pd.option_context("display.width", width, "display.max_columns", 20,
                                   "display.float_format", "{:.4g}".format):
                lines.append(self.table.to_string())
        return "\n".join(lines + ["=" * width])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        out = f"<h4>{escape(self.title)}</h4>" + facts_table(self.info)
        if self.status_counts is not None:
            out += paragraph("Item status: " + self._status_line())
        if self.table is not None:
            out += html_table(self.table, caption=self.caption,
                              index=not isinstance(self.table.index, pd.RangeIndex))
        return out
