"""The HTML kit of every causalrec report: escaped tables, embedded figures, sections and a
self-contained page.

A page embeds its plots (base64 PNG) and its styles, loads no script, font or style from
anywhere, and forbids it with a Content-Security-Policy. Every string that comes from the
data (item names, column names, titles) is HTML-escaped, so a malicious item name shows up
as text. Used by the effect report, the fairness audit and the uplift report: keep the
signatures stable.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

__all__ = ["escape", "format_cell", "html_table", "facts_table", "new_figure", "png_to_img",
           "figure_to_img", "section", "paragraph", "html_page", "mpl_label"]

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


def escape(value) -> str:
    """HTML-escape any value (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def format_cell(value, float_format: str) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else float_format.format(value)
    return str(value)


def html_table(frame: pd.DataFrame, *, float_format: str = "{:.4g}", max_rows: int | None = None,
                index: bool = False, caption: str | None = None) -> str:
    """An escaped HTML table; numeric columns are right-aligned.

    ``max_rows`` shows only the first rows and says how many were left out.
    """
    if index:
        frame = frame.reset_index()
    shown = frame if max_rows is None else frame.head(max_rows)
    numeric = [pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
               for dtype in frame.dtypes]
    head = "".join(f'<th{" class=num" if num else ""}>{escape(col)}</th>'
                   for col, num in zip(frame.columns, numeric))
    rows = []
    for values in shown.itertuples(index=False, name=None):
        cells = "".join(f'<td{" class=num" if num else ""}>'
                        f"{escape(format_cell(v, float_format))}</td>"
                        for v, num in zip(values, numeric))
        rows.append(f"<tr>{cells}</tr>")
    if len(frame) > len(shown):
        rows.append(f'<tr class="more"><td colspan="{len(frame.columns)}">'
                    f"... {len(frame) - len(shown)} more rows</td></tr>")
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def facts_table(facts: dict, caption: str | None = None) -> str:
    """A two-column (name, value) table from a dict."""
    values = [format_cell(v, "{:.4g}") for v in facts.values()]
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


def html_page(title: str, body: str, subtitle: str | None = None) -> str:
    """A complete, self-contained HTML document; ``body`` is trusted HTML."""
    lead = f'<p class="lead">{escape(subtitle)}</p>' if subtitle else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><main><h1>{escape(title)}</h1>{lead}{body}</main></body></html>\n")


def mpl_label(value, width: int = 28) -> str:
    """A data string safe as matplotlib text: '$' would start mathtext."""
    text = str(value)
    if len(text) > width:
        text = text[: width - 1] + "\u2026"
    return text.replace("\\", "\\\\").replace("$", r"\$")

