"""A report as one self-contained HTML file: inline CSS, inline SVG charts, a few lines of
inline script to sort tables. Nothing is fetched to view it."""

from __future__ import annotations

import html
import re

from mlxd.reports.report import Report, Table

CSS = """
body { font: 14px/1.45 -apple-system, system-ui, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; flex: 0 1 580px; } figcaption { font-size: 12px; color: #555; }
figure svg { width: 100%; height: auto; }
code { background: #f4f4f4; padding: 0 .25em; }
"""

# Click a header: sort its table by that column (numbers by data-sort, else text); click
# again to reverse.
SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th, _) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    function key(row) {
      var td = row.children[col], v = td.getAttribute("data-sort");
      if (v === null) return td.textContent.trim();
      return v === "" ? null : Number(v);
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) return (x === null) - (y === null);
      return (typeof x === "number" && typeof y === "number" ? x - y
              : String(x).localeCompare(String(y))) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_CODE = re.compile(r"`([^`]+)`")


def _text(s: str) -> str:
    """Escape, and turn Markdown's `code` into <code>."""
    return _CODE.sub(r"<code>\1</code>", html.escape(s))


def table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = []
    for row in t.rows:
        cells = []
        for cell in row:
            if isinstance(cell.sort, int | float) and not isinstance(cell.sort, bool):
                cells.append(
                    f'<td class="num" data-sort="{cell.sort!r}">{html.escape(cell.text)}</td>'
                )
            elif cell.sort is None and cell.text == "":
                cells.append('<td data-sort=""></td>')
            else:
                cells.append(f"<td>{html.escape(cell.text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable" id="{html.escape(t.id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _figure(chart) -> str:
    return (
        f'<figure id="{chart.id}">{chart.svg}<figcaption>{html.escape(chart.title)}'
        "</figcaption></figure>"
    )


def render_html(report: Report) -> str:
    from mlxd.reports import charts

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    for i, section in enumerate(report.sections):
        parts.append(f"<h{section.level}>{html.escape(section.title)}</h{section.level}>")
        for block in section.blocks:
            parts.append(f"<p>{_text(block)}</p>" if isinstance(block, str) else table_html(block))
        figures = []
        if i == 0:
            overview = charts.speed_memory(report.data.families)
            figures += [overview] if overview else []
        if section.family is not None:
            figures += charts.family_charts(section.family)
        if figures:
            parts.append('<div class="charts">' + "".join(_figure(f) for f in figures) + "</div>")
    parts.append(f"<script>{SORT_JS}</script></body></html>")
    return "\n".join(parts) + "\n"
