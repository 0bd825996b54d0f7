"""The HTML kit of every causalrec report: escaped tables, embedded figures, sections and a
self-contained page.

A page embeds its plots (base64 PNG), its styles and at most a few inline scripts of its own,
loads nothing from anywhere, and forbids it with a Content-Security-Policy: a script runs only
if its sha256 is listed there, so data cannot smuggle one in. Every string that comes from the
data (item names, column names, titles) is HTML-escaped, so a malicious item name shows up
as text. Used by the effect report, the fairness audit, the uplift report and the summaries
(``causalrec.summary``); ``causalrec.reporting.html`` is its public name. Keep the
signatures stable.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import math

import numpy as np
import pandas as pd

__all__ = ["escape", "format_cell", "format_number", "column_decimals", "html_table",
           "facts_table", "new_figure", "png_to_img", "figure_to_img", "section", "paragraph",
           "html_page", "mpl_label", "script_hash", "SIGNIFICANT"]

# One number format for every report: each column shows its typical value to this many
# significant digits, all its cells with the same number of decimals.
SIGNIFICANT = 3
# columns that measure one quantity on one scale: shown with the same decimals
SHARED_DECIMALS = (
    ("ate", "ci_low", "ci_high", "posterior_mean", "posterior_low", "posterior_high",
     "naive_ate", "se", "posterior_sd"),
    ("prob_positive", "prob_top_k"),
    ("ess_treated", "ess_control"),
    ("e_min", "e_max", "e_min_treated", "e_max_treated", "e_min_control", "e_max_control",
     "mean_propensity", "treated_share"),
)

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
.answer { border: 2px solid var(--accent); border-radius: 8px; padding: 4px 18px 10px;
          margin: 12px 0 20px; }
.answer h3 { margin-top: 0.9em; }
.answer td { white-space: nowrap; }
p.headline { font-size: 1.1em; }
td.good { color: #1a7f37; font-weight: 600; } td.bad { color: var(--bad); font-weight: 600; }
input.search { font: inherit; padding: 3px 8px; width: 22em; margin: 4px 0; }
table.sortable th { cursor: pointer; white-space: nowrap; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
div.scroll { max-height: 640px; overflow: auto; border: 1px solid var(--line); }
"""

# No external resource can load, and only the page's own hashed scripts can run, even if
# escaping ever failed.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def escape(value) -> str:
    """HTML-escape any value (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def column_decimals(values, significant: int = SIGNIFICANT) -> int | None:
    """Decimals that show a column's typical (median nonzero) magnitude to ``significant``
    digits; 0 for whole numbers; None (per-cell significant digits) when the column spans
    more than ``10**significant`` in magnitude below 1 and is never negative, where fixed
    decimals would print small values as 0 (p-values, shares of rare events)."""
    x = np.abs(pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float))
    x = x[np.isfinite(x) & (x > 0)]
    if not len(x):
        return 0
    if np.all(x == np.round(x)):
        return 0
    small = x[x < 1]
    signed = bool(np.nanmin(pd.to_numeric(pd.Series(values), errors="coerce")) < 0)
    # (signed quantities, like effects and their bounds, keep fixed decimals: near zero,
    # 0.0000 is the honest reading)
    if not signed and len(small) and small.max() / small.min() > 10.0 ** significant:
        return None
    magnitude = math.floor(math.log10(float(np.median(x))))
    return int(min(max(significant - 1 - magnitude, 0), 12))


def format_number(value, decimals: int | None = None, significant: int = SIGNIFICANT) -> str:
    """A number as text: fixed ``decimals`` with thousands separators, or ``significant``
    digits when ``decimals`` is None; blank for missing values."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if not np.isfinite(value):
        return "" if np.isnan(value) else str(value)
    if decimals is None:
        if value != 0 and abs(value) >= 10 ** significant:  # no exponent for large numbers
            return f"{value:,.0f}"
        return f"{value:.{significant}g}"
    return f"{value:,.{decimals}f}"


def format_cell(value, float_format: str | int | None = None) -> str:
    """A table cell: ``float_format`` is a format string, or the column's decimals (see
    ``column_decimals``; None: significant digits)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(float_format, str) and isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else float_format.format(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return format_number(value, None if isinstance(float_format, str) else float_format)
    return str(value)


def html_table(frame: pd.DataFrame, *, float_format: str | None = None,
               max_rows: int | None = None, index: bool = False, caption: str | None = None,
               table_id: str | None = None, sort_values: bool = False,
               decimals: dict | None = None) -> str:
    """An escaped HTML table; numeric columns are right-aligned, each with the decimals
    ``column_decimals`` chooses for it (or ``float_format``, a format string, for all).
    Columns of one quantity (an estimate and its interval bounds) share their decimals:
    those named in ``decimals`` (column -> decimals) and the ``SHARED_DECIMALS`` groups.

    ``max_rows`` shows only the first rows and says how many were left out. ``sort_values``
    puts each numeric cell's full-precision value in ``data-v`` (for the sorting script).
    """
    if index:
        frame = frame.reset_index()
    shown = frame if max_rows is None else frame.head(max_rows)
    numeric = [pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
               for dtype in frame.dtypes]
    shared = dict(decimals or {})
    for group in SHARED_DECIMALS:
        present = [c for c in group if c in frame.columns and c not in shared]
        if len(present) > 1:
            joint = column_decimals(pd.concat([frame[c] for c in present], ignore_index=True))
            shared.update(dict.fromkeys(present, joint))
    formats = [float_format if float_format is not None
               else shared.get(col, column_decimals(frame[col])) if num else None
               for col, num in zip(frame.columns, numeric)]
    head = "".join(f'<th{" class=num" if num else ""}>{escape(col)}</th>'
                   for col, num in zip(frame.columns, numeric))
    rows = []
    for values in shown.itertuples(index=False, name=None):
        cells = "".join(f'<td{" class=num" if num else ""}'
                        f'{_sort_value(v) if num and sort_values else ""}>'
                        f"{escape(format_cell(v, fmt))}</td>"
                        for v, num, fmt in zip(values, numeric, formats))
        rows.append(f"<tr>{cells}</tr>")
    if len(frame) > len(shown):
        rows.append(f'<tr class="more"><td colspan="{len(frame.columns)}">'
                    f"... {len(frame) - len(shown)} more rows</td></tr>")
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    ident = f' id="{escape(table_id)}"' if table_id else ""
    return (f"<table{ident}>{cap}<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _sort_value(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return f' data-v="{number!r}"' if np.isfinite(number) else ""


def facts_table(facts: dict, caption: str | None = None) -> str:
    """A two-column (name, value) table from a dict (each value its own quantity: shown to
    the report's significant digits)."""
    values = [format_cell(v) for v in facts.values()]
    frame = pd.DataFrame({"": list(facts), "value": values})
    return html_table(frame, caption=caption)


def new_figure(width: float = 7.0, height: float = 4.0):
    """A matplotlib Figure on the Agg canvas, outside pyplot (no global state, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_to_img(data: bytes, alt: str = "") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img class="figure" src="data:image/png;base64,{encoded}" alt="{escape(alt)}">'


def figure_to_img(fig, alt: str = "", dpi: int = 110) -> str:
    """``<img>`` tag holding the figure as an embedded base64 PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return png_to_img(buffer.getvalue(), alt)


def section(title: str, body: str, anchor: str | None = None) -> str:
    """An ``<section>`` with an escaped ``<h2>`` title; ``body`` is trusted HTML."""
    ident = f' id="{escape(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{escape(title)}</h2>{body}</section>"


def paragraph(text: str, cls: str | None = None) -> str:
    """An escaped paragraph."""
    return f'<p{f" class={cls}" if cls else ""}>{escape(text)}</p>'


def script_hash(script: str) -> str:
    """The CSP source that lets exactly this inline script run."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def html_page(title: str, body: str, subtitle: str | None = None, scripts=()) -> str:
    """A complete, self-contained HTML document; ``body`` is trusted HTML. ``scripts`` are
    the page's own inline scripts (trusted code, never data): each is allowed by its hash."""
    lead = f'<p class="lead">{escape(subtitle)}</p>' if subtitle else ""
    csp = _CSP + ("; script-src " + " ".join(script_hash(s) for s in scripts) if scripts else "")
    tail = "".join(f"<script>{s}</script>" for s in scripts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><main><h1>{escape(title)}</h1>{lead}{body}</main>{tail}</body></html>\n")


def mpl_label(value, width: int = 28) -> str:
    """A data string safe as matplotlib text: '$' would start mathtext."""
    text = str(value)
    if len(text) > width:
        text = text[: width - 1] + "\u2026"
    return text.replace("\\", "\\\\").replace("$", r"\$")

