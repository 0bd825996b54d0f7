"""Every item in one table: in the page (sortable and searchable by a small inline script the
page's CSP allows by its hash) and as ``items.csv`` / ``items.parquet`` next to the report."""
from __future__ import annotations

import pandas as pd

from .html import html_table, paragraph

__all__ = ["ITEM_COLUMNS", "items_frame", "items_table_html", "SORT_SCRIPT"]

# the columns an analyst filters on, in reading order (those the table has)
ITEM_COLUMNS = ("status", "overlap", "rank", "posterior_mean", "posterior_low",
                "posterior_high", "ate", "ci_low", "ci_high", "prob_positive", "prob_top_k",
                "q_value", "n", "n_treated", "n_control", "share_outside_support",
                "ess_treated", "ess_control", "rv", "e_value")

# Sorts on a header click and filters on the search box; on load it applies a URL hash such
# as #sort=ate-desc&q=item (bookmarkable views, and testable in a headless browser).
SORT_SCRIPT = """(function () {
var table = document.getElementById("items-table");
if (!table) { return; }
var body = table.tBodies[0], heads = table.tHead.rows[0].cells;
var search = document.getElementById("items-search");
var count = document.getElementById("items-count");
function key(cell) {
  var v = cell.getAttribute("data-v");
  return v === null ? cell.textContent.toLowerCase() : parseFloat(v);
}
function sortBy(i, descending) {
  var rows = Array.prototype.slice.call(body.rows);
  var numeric = heads[i].classList.contains("num");
  rows.sort(function (a, b) {
    var x = key(a.cells[i]), y = key(b.cells[i]);
    var xBlank = numeric ? typeof x !== "number" : x === "";
    var yBlank = numeric ? typeof y !== "number" : y === "";
    if (xBlank || yBlank) { return xBlank - yBlank; }
    var c = numeric ? x - y : String(x).localeCompare(String(y));
    return descending ? -c : c;
  });
  rows.forEach(function (row) { body.appendChild(row); });
  for (var j = 0; j < heads.length; j++) { heads[j].removeAttribute("aria-sort"); }
  heads[i].setAttribute("aria-sort", descending ? "descending" : "ascending");
}
function filter(text) {
  text = text.toLowerCase();
  var shown = 0;
  Array.prototype.forEach.call(body.rows, function (row) {
    var keep = row.textContent.toLowerCase().indexOf(text) >= 0;
    row.hidden = !keep;
    shown += keep ? 1 : 0;
  });
  count.textContent = String(shown);
}
Array.prototype.forEach.call(heads, function (head, i) {
  head.addEventListener("click", function () {
    sortBy(i, head.getAttribute("aria-sort") === "ascending");
  });
});
search.addEventListener("input", function () { filter(search.value); });
var hash = decodeURIComponent(location.hash.replace(/^#/, ""));
var sort = /(?:^|&)sort=([^&]+)-(asc|desc)(?:&|$)/.exec(hash);
if (sort) {
  for (var i = 0; i < heads.length; i++) {
    if (heads[i].textContent === sort[1]) { sortBy(i, sort[2] === "desc"); }
  }
}
var query = /(?:^|&)q=([^&]*)/.exec(hash);
if (query) { search.value = query[1]; filter(query[1]); }
}());"""


def items_frame(table: pd.DataFrame, keys: list[str], verdict: pd.Series) -> pd.DataFrame:
    """The item table: the item keys, then the ``ITEM_COLUMNS`` present (``overlap`` from the
    overlap verdict), in the table's order (best rank first)."""
    frame = table.assign(overlap=verdict)
    return frame[keys + [c for c in ITEM_COLUMNS if c in frame.columns and c not in keys]]


def items_table_html(frame: pd.DataFrame, max_rows: int = 5000) -> str:
    """The sortable, searchable table (the first ``max_rows`` items in the page; the CSV
    holds all)."""
    shown = frame.head(max_rows)
    note = (f"All {len(frame)} items" if len(shown) == len(frame) else
            f"The first {len(shown)} of {len(frame)} items (all are in the CSV)")
    out = paragraph(f"{note}, best rank first. Click a column to sort; type to filter. "
                    "posterior_* are the shrunk (empirical-Bayes) effect and its 95% "
                    "interval, ate / ci_* the item's own estimate, overlap the verdict of the "
                    "overlap section. The same table: ")
    out = out[:-4] + ('<a href="items.csv">items.csv</a>, <a href="items.parquet">'
                      'items.parquet</a> (written next to this report).</p>')
    out += ('<p><input id="items-search" class="search" type="search" '
            'placeholder="filter items (any column)" aria-label="filter items"> '
            f'<span id="items-count">{len(shown)}</span> shown</p>')
    table = html_table(shown, table_id="items-table", sort_values=True)
    table = table.replace('<table id="items-table">',
                          '<table id="items-table" class="sortable">', 1)
    return out + f'<div class="scroll">{table}</div>' + (
        "" if len(shown) == len(frame) else paragraph(note, "note"))
