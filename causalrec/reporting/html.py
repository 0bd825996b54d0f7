"""The HTML kit of every report, under its reporting name: it lives in
``causalrec.utils.html`` (below everything, so that the summary type of the lowest layers can
render tables with it); see there."""
from ..utils.html import (SIGNIFICANT, column_decimals, escape, facts_table, figure_to_img,
                          format_cell, format_number, html_page, html_table, mpl_label,
                          new_figure, paragraph, png_to_img, script_hash, section)

__all__ = ["escape", "format_cell", "format_number", "column_decimals", "html_table",
           "facts_table", "new_figure", "png_to_img", "figure_to_img", "section", "paragraph",
           "html_page", "mpl_label", "script_hash", "SIGNIFICANT"]
